"""The file registry: services.yaml (or the same structure in JSON), one client for both sides.

The source reads it (sources/file.py) and the agent edits it (agent/file.py) through the
same calls, so a broken file, a missing one or an unreadable one is worded the same on
both sides, and every write is atomic (util/atomic_write.py).

    services:
      users:
        - {id: users-1, address: 127.0.0.1:9001, weight: 10, state: up}

An edit is a read-modify-write under an exclusive lock on `<file>.lock`, so two agents
never lose each other's edits. Comments in the file are not preserved by an edit.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..util.atomic_write import write_atomic
from ..util.yaml_load import YamlError, load_data
from .errors import RegistryError

Services = dict[Any, Any]  # service name -> its instance list, as the file holds them


def digest(raw: bytes) -> str:
    """The file's version: a hash of its bytes."""
    return hashlib.sha256(raw).hexdigest()[:16]


class ServicesFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"file registry {self.path}"

    def read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"{self.name}: cannot read: {exc.strerror}") from None

    def services(self, raw: bytes, where: str | None = None) -> Services:
        """The `services` mapping of the file's text; RegistryError when the envelope is
        broken (not YAML, not a mapping, no `services` mapping)."""
        where = where or str(self.path)
        data = self._load(raw, where)
        if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
            raise self._envelope(where)
        return data["services"]

    def _load(self, raw: bytes, where: str) -> Any:
        try:
            return load_data(raw, where)
        except YamlError as exc:
            raise RegistryError(f"file registry {exc}") from None

    def _envelope(self, where: str) -> RegistryError:
        return RegistryError(f"file registry {where}: expected a mapping with a 'services' key")

    def edit(self, service: str, change: Callable[[list[Any]], bool]) -> None:
        """Apply `change` to `service`'s instance list under the lock; write (atomically)
        only when it returns True. A missing or empty file, or `services:` with nothing
        under it, is a registry with no services; a service left without instances is
        removed from the file; other top-level keys are kept."""
        with self._locked():
            try:
                data = self._load(self.path.read_bytes(), str(self.path))
            except FileNotFoundError:
                data = None
            except OSError as exc:
                raise RegistryError(f"{self.name}: cannot read: {exc.strerror}") from None
            if data is None:
                data = {"services": {}}
            if not isinstance(data, dict) or not isinstance(data.get("services") or {}, dict):
                raise self._envelope(str(self.path))
            services = data["services"] = data.get("services") or {}
            instances = services.get(service) or []
            if not isinstance(instances, list):
                raise RegistryError(f"{self.name}: services.{service} is not a list")
            if not change(instances):
                return
            if instances:
                services[service] = instances
            else:
                services.pop(service, None)
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
            try:
                write_atomic(self.path, text, backup=False)
            except OSError as exc:
                raise RegistryError(f"{self.name}: cannot write: {exc}") from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RegistryError(f"file registry {lock}: cannot open lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock
