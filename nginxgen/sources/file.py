"""File registry: services.yaml (or the same structure in JSON), read through
registry/file.py, the client the agent writes with.

services:
  users:
    - {id: users-1, address: 127.0.0.1:9001, weight: 10, state: up,
       registered_at: 2026-11-29T10:00:00Z, tags: [v2], meta: {zone: a}}
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence

from ..model.catalog import Catalog, Dropped
from ..model.validate import CatalogBuilder, label
from ..registry.file import ServicesFile, digest
from ..registry.shift import MAX_TEXT, file_path
from ..spec import FileRegistry
from .base import RegistryError

FIELDS = ("id", "address", "host", "port", "weight", "state", "registered_at", "tags", "meta")


class FileSource:
    def __init__(self, config: FileRegistry, services: Sequence[str] = ()) -> None:
        self.file = ServicesFile(config.path)
        self.path = self.file.path
        self.poll = max(0.05, config.poll)
        self.splits = file_path(self.path)

    def _split_bytes(self) -> bytes:
        """The split overrides beside the registry (`nginxgen shift`); none: b""."""
        try:
            return self.splits.read_bytes()[: MAX_TEXT * 64]
        except OSError:
            return b""

    def read(self) -> Catalog:
        raw, splits = self.file.read_bytes(), self._split_bytes()
        catalog = parse_registry(raw, str(self.path), digest(raw + b"\0" + splits))
        return parse_splits(catalog, splits, str(self.splits))

    def wait(self, version: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if digest(self.file.read_bytes() + b"\0" + self._split_bytes()) != version:
                    return True
            except RegistryError:
                pass  # a file being replaced is briefly missing; the next read reports it
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        pass


def parse_registry(raw: bytes, where: str, version: str = "") -> Catalog:
    """Parse the services file. A broken envelope fails the read; bad entries are dropped."""
    services = ServicesFile(where).services(raw, where)
    builder = CatalogBuilder(f"file:{where}")
    for name, instances in services.items():
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


def parse_splits(catalog: Catalog, raw: bytes, where: str) -> Catalog:
    """The overrides file: service -> override; each one's text checked at plan."""
    if not raw:
        return catalog
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        bad = Dropped("-", "split", f"{where}: not a JSON object of service -> override")
        return dataclasses.replace(catalog, dropped=catalog.dropped + (bad,))
    texts = {str(k): json.dumps(v) for k, v in data.items()}
    return dataclasses.replace(catalog, splits=texts)
