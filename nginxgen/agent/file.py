"""Write one instance into the file registry (services.yaml), for local demos and tests.

Every change is a read-modify-write under an exclusive lock on `<file>.lock` (so two agents
never lose each other's edits), written atomically (readers see the old file or the new).
The file has no TTL: an agent killed with SIGKILL leaves its entry behind. Comments in
the file are not preserved.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..spec import FileRegistry
from ..util.atomic_write import write_atomic
from ..util.yaml_load import YamlError, load_data
from .base import LeaseLost, Record, RegistryDown


class FileRegistrar:
    def __init__(self, config: FileRegistry, service: str, instance_id: str, ttl: float) -> None:
        self.path = Path(config.path)
        self.service = service
        self.instance_id = instance_id
        self.name = f"file {self.path}"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RegistryDown(f"file registry {lock}: cannot open lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _edit(self, change: Callable[[list[Any]], bool]) -> None:
        """Apply `change` to this service's instance list; write only when it says so."""
        with self._locked():
            try:
                data: Any = load_data(self.path.read_bytes(), str(self.path))
            except FileNotFoundError:
                data = None
            except OSError as exc:
                why = exc.strerror
                raise RegistryDown(f"file registry {self.path}: cannot read: {why}") from None
            except YamlError as exc:
                raise RegistryDown(f"file registry {exc}") from None
            if data is None:
                data = {"services": {}}
            if not isinstance(data, dict) or not isinstance(data.get("services") or {}, dict):
                raise RegistryDown(
                    f"file registry {self.path}: expected a mapping with a 'services' key"
                )
            services = data.setdefault("services", {}) or {}
            data["services"] = services
            instances = services.get(self.service) or []
            if not isinstance(instances, list):
                raise RegistryDown(
                    f"file registry {self.path}: services.{self.service} is not a list"
                )
            if not change(instances):
                return
            if instances:
                services[self.service] = instances
            else:
                services.pop(self.service, None)
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
            try:
                write_atomic(self.path, text, backup=False)
            except OSError as exc:
                raise RegistryDown(f"file registry {self.path}: cannot write: {exc}") from None

    def _index(self, instances: list[Any]) -> int | None:
        for i, entry in enumerate(instances):
            if isinstance(entry, dict) and entry.get("id") == self.instance_id:
                return i
        return None

    def register(self, record: Record) -> None:
        def change(instances: list[Any]) -> bool:
            i = self._index(instances)
            if i is None:
                instances.append(record.to_json())
            else:
                instances[i] = record.to_json()
            return True

        self._edit(change)

    def update(self, record: Record) -> None:
        def change(instances: list[Any]) -> bool:
            i = self._index(instances)
            if i is None:
                raise LeaseLost(f"{self.name}: entry {self.instance_id!r} was removed")
            if instances[i] == record.to_json():
                return False
            instances[i] = record.to_json()
            return True

        self._edit(change)

    def heartbeat(self, record: Record) -> None:
        # No TTL to refresh; re-add the entry if someone removed it.
        self.update(record)

    def deregister(self) -> None:
        def change(instances: list[Any]) -> bool:
            i = self._index(instances)
            if i is None:
                return False
            del instances[i]
            return True

        self._edit(change)

    def close(self) -> None:
        pass
