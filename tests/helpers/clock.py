"""A clock the test drives: `sleep` moves time on at once, nobody waits."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta, timezone

from nginxgen.util.clock import Clock

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


class FakeClock(Clock):
    """Monotonic seconds from `start`, wall time from `wall`, moved by `sleep`/`advance`.

    `on_sleep` (if set) is called after every sleep, with the clock: a test stops a loop
    there after so many naps, or publishes a registry change at a given time.
    """

    def __init__(self, start: float = 1000.0, wall: datetime = T0) -> None:
        self.now = start
        self._start = start
        self._wall = wall
        self.slept: deque[float] = deque(maxlen=1000)  # the last naps, for asserts
        self.on_sleep: object = None

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return self._wall + timedelta(seconds=self.now - self._start)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        if callable(self.on_sleep):
            self.on_sleep(self)

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    @property
    def elapsed(self) -> float:
        return self.now - self._start
