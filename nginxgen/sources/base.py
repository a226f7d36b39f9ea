"""What every registry adapter provides."""

from __future__ import annotations

from typing import Protocol

from ..model.catalog import Catalog
from ..registry.errors import RegistryError

__all__ = ["RegistryError", "Source"]


class Source(Protocol):
    def read(self) -> Catalog:
        """One complete, consistent read. All-or-nothing: raises RegistryError."""
        ...

    def wait(self, version: str, timeout: float) -> bool:
        """Block until the registry moves past `version` (True) or `timeout` passes (False).

        Uses the cheapest change signal the registry has (watch, blocking query, poll).
        May raise RegistryError; the caller backs off and reads again.
        """
        ...

    def close(self) -> None: ...
