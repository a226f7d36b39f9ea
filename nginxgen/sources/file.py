"""File registry: services.yaml (or the same structure in JSON).

services:
  users:
    - {id: users-1, address: 127.0.0.1:9001, weight: 10, state: up,
       registered_at: 2026-11-29T10:00:00Z, tags: [v2], meta: {zone: a}}
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from ..model.catalog import Catalog
from ..model.validate import CatalogBuilder, label
from ..spec import FileRegistry
from ..util.yaml_load import YamlError, load_data
from .base import RegistryError

FIELDS = ("id", "address", "host", "port", "weight", "state", "registered_at", "tags", "meta")


class FileSource:
    def __init__(self, config: FileRegistry, services: Sequence[str] = ()) -> None:
        self.path = Path(config.path)
        self.poll = max(0.05, config.poll)

    def _bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"file registry {self.path}: cannot read: {exc.strerror}") from None

    def read(self) -> Catalog:
        raw = self._bytes()
        return parse_registry(raw, str(self.path), _digest(raw))

    def wait(self, version: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if _digest(self._bytes()) != version:
                    return True
            except RegistryError:
                pass  # a file being replaced is briefly missing; the next read reports it
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        pass


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_registry(raw: bytes, where: str, version: str = "") -> Catalog:
    """Parse the services file. A broken envelope fails the read; bad entries are dropped."""
    try:
        data = load_data(raw, where)
    except YamlError as exc:
        raise RegistryError(f"file registry {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise RegistryError(f"file registry {where}: expected a mapping with a 'services' key")
    builder = CatalogBuilder(f"file:{where}")
    for name, instances in data["services"].items():
        if builder.service(name) is None:
            continue
        if instances is None:
            continue
        if not isinstance(instances, list):
            builder.drop(name, "-", "instances must be a list")
            continue
        for i, entry in enumerate(instances):
            if not isinstance(entry, dict):
                builder.drop(name, f"#{i}", "instance must be a mapping")
                continue
            unknown = [label(k) for k in entry if k not in FIELDS]
            if unknown:
                instance = entry.get("id", f"#{i}")
                builder.drop(name, instance, f"unknown field(s): {', '.join(sorted(unknown))}")
                continue
            if "id" not in entry:
                builder.drop(name, f"#{i}", "missing 'id'")
                continue
            builder.add(name, **entry)
    return builder.build(version)
