"""Waiting for something real (a server, a log line, a reload) with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def poll_until(
    check: Callable[[], T],
    timeout: float = 20.0,
    what: str = "condition",
    every: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `check` until it returns something truthy, and return that.

    At the deadline: AssertionError naming `what`, the last value, and `detail()` (a log,
    say). Use it for real servers and processes; logic that depends on time takes a clock
    the test drives instead.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}"
            )
        time.sleep(every)


def seconds_until(
    check: Callable[[], Any], timeout: float = 15.0, what: str = "condition"
) -> float:
    """poll_until, returning how many seconds it took."""
    started = time.monotonic()
    poll_until(check, timeout, what, every=0.02)
    return time.monotonic() - started
