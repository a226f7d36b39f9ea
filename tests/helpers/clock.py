"""A clock the test moves: for time-dependent logic that takes an injected clock."""

from __future__ import annotations


class ManualClock:
    """Monotonic seconds that change only when the test says so: `clock.now += 5`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
