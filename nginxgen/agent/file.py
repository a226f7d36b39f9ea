"""Write one instance into the file registry (services.yaml), for local demos and tests,
through registry/file.py, the client the source reads with.

Every change is a read-modify-write under an exclusive lock on `<file>.lock` (so two agents
never lose each other's edits), written atomically (readers see the old file or the new).
The file has no TTL: an agent killed with SIGKILL leaves its entry behind. Comments in
the file are not preserved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry.file import ServicesFile
from ..spec import FileRegistry
from .base import LeaseLost, Record


class FileRegistrar:
    def __init__(self, config: FileRegistry, service: str, instance_id: str, ttl: float) -> None:
        self.file = ServicesFile(config.path)
        self.path = self.file.path
        self.service = service
        self.instance_id = instance_id
        self.name = f"file {self.path}"

    def _edit(self, change: Callable[[list[Any]], bool]) -> None:
        """Apply `change` to this service's instance list; write only when it says so."""
        self.file.edit(self.service, change)

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
