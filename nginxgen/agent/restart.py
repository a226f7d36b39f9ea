"""Restarts asked for through the control endpoint: one at a time, rate limited, recorded.

The control endpoint's threads ask (`RestartDesk.request`) and read (`status`); the agent's
loop takes the accepted restart, does it step by step, and marks each step here. The
desk holds everything both sides see, under one lock; no other state crosses threads.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

Clock = Callable[[], float]
Wall = Callable[[], datetime]
Log = Callable[[str], None]

# Results a finished restart reports.
OK, ABORTED, FAILED, CANCELLED = "ok", "aborted", "failed", "cancelled"

# The steps of a restart, in the order they happen.
STEPS = ("deregistered", "unlisted", "grace_over", "stopped", "started", "healthy", "registered")


def wall_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_ms(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Answer:
    """What the control endpoint sends back: an HTTP status, a JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


class RestartLimit:
    """At most `limit` restarts in any `window` seconds (a sliding window over the times
    restarts were accepted). The clock is injected so tests can move time."""

    def __init__(self, limit: int, window: float, clock: Clock) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._taken: deque[float] = deque()
        self.refused = 0
        self.last_refused: float | None = None

    def _expire(self, now: float) -> None:
        while self._taken and self._taken[0] <= now - self.window:
            self._taken.popleft()

    def take(self) -> float:
        """Take one restart: 0.0 when allowed, else the seconds until one is allowed."""
        now = self.clock()
        self._expire(now)
        if len(self._taken) < self.limit:
            self._taken.append(now)
            return 0.0
        self.refused += 1
        self.last_refused = now
        return self._taken[0] + self.window - now

    def retry_after(self) -> float:
        """Seconds until a restart would be allowed again (0.0: one is allowed now)."""
        now = self.clock()
        self._expire(now)
        return 0.0 if len(self._taken) < self.limit else self._taken[0] + self.window - now

    def to_json(self) -> dict[str, Any]:
        wait = self.retry_after()
        return {
            "limit": self.limit,
            "window_seconds": self.window,
            "used": len(self._taken),
            "limited": wait > 0,
            "retry_after_seconds": math.ceil(wait),
            "refused": self.refused,
        }


@dataclass
class Restart:
    id: str
    requested_at: datetime
    requested: float  # by the injected clock
    phase: str = "deregistering"
    steps: list[tuple[str, datetime, float]] = field(default_factory=list)
    result: str | None = None  # None while it runs
    reason: str = ""
    finished_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "requested_at": iso_ms(self.requested_at),
            "phase": self.phase,
            "result": self.result,
            "reason": self.reason,
            "finished_at": iso_ms(self.finished_at) if self.finished_at else None,
            "steps": [
                {"step": name, "at": iso_ms(at), "after_seconds": round(after, 3)}
                for name, at, after in self.steps
            ],
        }


class RestartDesk:
    """Takes restart requests from the control endpoint and hands them to the agent's loop.

    Refusals, in order: the agent is stopping (503), a restart is running (409), the rate
    limit is reached (429 with Retry-After). Only an accepted request (202) counts against
    the limit, whatever its outcome; a refused one changes nothing.
    """

    def __init__(
        self,
        limit: RestartLimit,
        log: Log,
        *,
        clock: Clock,
        wall: Wall = wall_now,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.limit = limit
        self.log = log
        self.clock = clock
        self.wall = wall
        self.wake = wake  # tells the loop there is something to do
        self._lock = threading.Lock()
        self._current: Restart | None = None
        self._last: Restart | None = None
        self._taken = False  # the loop has begun the current one
        self._stopping = False
        self._done = 0  # restarts that ended with the unit registered again
        self._unit: dict[str, Any] = {}

    # --- the control endpoint's side ------------------------------------------------------

    def request(self, peer: str) -> Answer:
        with self._lock:
            if self._stopping:
                self.log(f"control: restart asked by {peer} refused: the agent is stopping")
                return Answer(503, {"error": "the agent is stopping"})
            if self._current is not None:
                running = self._current.id
                self.log(f"control: restart asked by {peer} refused: restart {running} runs")
                return Answer(409, {"error": "a restart is running", "restart": running})
            wait = self.limit.take()
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                self.log(
                    f"control: restart asked by {peer} refused: the limit of "
                    f"{self.limit.limit} per {secs(self.limit.window)} is reached; "
                    f"the next one is allowed in {seconds}s"
                )
                body = {
                    "error": f"restart limit of {self.limit.limit} per "
                    f"{secs(self.limit.window)} reached",
                    "retry_after_seconds": seconds,
                }
                return Answer(429, body, (("Retry-After", str(seconds)),))
            job = Restart(secrets.token_hex(4), self.wall(), self.clock())
            self._current, self._taken = job, False
            self.log(f"control: restart {job.id} asked by {peer}: accepted")
        self.wake()
        return Answer(202, {"restart": job.id, "status": "/status"})

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._unit,
                "restarts": self._done,
                "restart": self._current.to_json() if self._current else None,
                "last_restart": self._last.to_json() if self._last else None,
                "limit": self.limit.to_json(),
            }

    # --- the agent loop's side ------------------------------------------------------------

    def take(self) -> Restart | None:
        """The accepted restart the loop has not begun yet, if any (marks it begun)."""
        with self._lock:
            if self._current is None or self._taken:
                return None
            self._taken = True
            return self._current

    @property
    def running(self) -> bool:
        with self._lock:
            return self._current is not None

    def phase(self, phase: str) -> None:
        with self._lock:
            if self._current is not None:
                self._current.phase = phase

    def step(self, name: str, at: float | None = None) -> float:
        """Record that the running restart reached step `name` (now, or at `at` by the
        clock); returns its offset from the request."""
        with self._lock:
            job = self._current
            if job is None:
                return 0.0
            after = (self.clock() if at is None else at) - job.requested
            job.steps.append((name, self.wall(), after))
            return after

    def finish(self, result: str, reason: str = "") -> Restart | None:
        with self._lock:
            job, self._current = self._current, None
            if job is None:
                return None
            job.result, job.reason, job.phase = result, reason, "done"
            job.finished_at = self.wall()
            if result == OK:
                self._done += 1
            self._last = job
            return job

    def stopping(self) -> None:
        """From now on every restart is refused with 503."""
        with self._lock:
            self._stopping = True

    def publish(self, **unit: Any) -> None:
        """What /status reports about the unit (state, pid, times), set by the loop."""
        with self._lock:
            self._unit = unit


def secs(seconds: float) -> str:
    """A duration for log lines: 15s, 10m, 1h."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
