"""Time as an input: everything that reads the time or waits takes a Clock.

The default is the system's. Tests pass a subclass they drive (tests/helpers/clock.py), so
debounce, backoff, ramps and confirmation deadlines are exact instead of racing a busy
machine.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone


class Clock:
    def monotonic(self) -> float:
        """Seconds for deadlines and durations; never jumps."""
        return time.monotonic()

    def wall(self) -> datetime:
        """Now, aware, in UTC: for plans (warm-up ramps) and what is shown to people."""
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))
