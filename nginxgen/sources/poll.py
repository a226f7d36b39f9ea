"""Change detection for registries without a change signal: read again, compare content."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..model.catalog import Catalog


def poll_until_changed(
    read: Callable[[], Catalog], version: str, timeout: float, interval: float
) -> bool:
    """Re-read every `interval` until the catalog's content differs from `version`.

    The version of a polled catalog is its content fingerprint, so a read whose answer is
    the same (Nacos/Eureka timestamps tick on every read) is not reported as a change.
    Read errors propagate: the caller backs off and keeps its last good catalog.
    """
    deadline = time.monotonic() + timeout
    while True:
        if read().version != version:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
