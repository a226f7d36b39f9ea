"""What `make_plan` may reuse from earlier plans, so one registry change re-plans one service.

`make_plan` stays a pure function of (spec, catalog, now, observed): a service's planned
result is reused only when every input it depends on is equal to the one it was planned
with, and only for the times `now` at which its warm-up ramps stand on the same step.

- the service's instances (the very tuple — sources keep the object of a service that did
  not change — or else by value), its policy, and the upstream zone;
- `now`: each entry carries a window [start, end) in which no ramp changes step; a result
  planned without a clock (`now` None, so no ramp at all) holds only without one when a
  clock would have started a ramp;
- `observed` (first-seen and return times, pseudo-dead keys): a change to any instance's
  entry evicts the service that instance belongs to, before anything is looked up.

Both memos are bounded and hold strong references to what they compare, so an `is`
check can never match a recycled object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ..model.observed import Observed
from .warmup import Ramp

T = TypeVar("T")

# Windows are shrunk by this much at both ends, so float rounding at a step boundary can
# never make a reused ramp disagree with a recomputed one (the ramp math works in floats).
_MARGIN = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Window:
    """The values of `now` for which a planned service stays the same."""

    start: datetime | None = None  # None: no lower bound
    end: datetime | None = None  # None: no upper bound
    never: bool = False  # depends on `now` continuously (a start in the future): never reuse
    clockless: bool = False  # planned with no clock where one would ramp: only for now=None

    def holds(self, now: datetime | None) -> bool:
        if self.never:
            return False
        if self.clockless:
            return now is None
        if self.start is None and self.end is None:
            return True  # no ramp involved: the same with or without a clock
        if now is None:
            return False
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


ALWAYS = Window()
NEVER = Window(never=True)
CLOCKLESS = Window(clockless=True)


def ramp_window(ramp: Ramp, start: datetime, now: datetime, period: float) -> Window:
    """Times at which an instance whose ramp began at `start` is on the same step as now."""
    if start >= now:
        return NEVER  # a registered_at in the future counts as "now", which moves
    lo = start + timedelta(seconds=(ramp.step - 1) * period) + _MARGIN
    hi = ramp.next_at - _MARGIN if ramp.next_at is not None else None
    return Window(lo, hi)


def intersect(windows: Iterable[Window]) -> Window:
    lo: datetime | None = None
    hi: datetime | None = None
    for w in windows:
        if w.never:
            return NEVER
        if w.clockless:
            return CLOCKLESS  # never mixed with a ramp window: those need a clock
        if w.start is not None and (lo is None or w.start > lo):
            lo = w.start
        if w.end is not None and (hi is None or w.end < hi):
            hi = w.end
    return Window(lo, hi)


def _same_view(given: Mapping[str, datetime], last: Mapping[str, datetime] | None) -> bool:
    return isinstance(given, MappingProxyType) and given is last


@dataclass(frozen=True)
class _Entry(Generic[T]):
    instances: tuple[Any, ...]
    policy: Any
    zone: str | None
    window: Window
    value: T


class ServiceMemo(Generic[T]):
    """One planned result per service name, valid while its inputs stay equal.

    Callers hold `lock` from `sync` through their last `put`, so entries and the observed
    state they were planned with always belong together.
    """

    def __init__(self, max_services: int = 200_000, max_keys: int = 2_000_000) -> None:
        self.lock = threading.Lock()
        self.max_services = max_services
        self.max_keys = max_keys
        self._entries: dict[str, _Entry[T]] = {}
        self._owners: dict[str, str] = {}  # instance key -> service name it was planned in
        self._first_seen: Mapping[str, datetime] = {}
        self._returned: Mapping[str, datetime] = {}
        self._first_seen_given: Mapping[str, datetime] | None = None  # as last passed
        self._returned_given: Mapping[str, datetime] | None = None
        self._dead: frozenset[str] = frozenset()
        # What left the memo other than by a lookup (make_plan's LastPass reads and resets
        # them: a result it reuses without a lookup must still be in here).
        self.evicted: set[str] = set()
        self.cleared = False

    def clear(self) -> None:
        self._entries.clear()
        self._owners.clear()
        self.cleared = True

    def sync(self, observed: Observed) -> None:
        """Evict every service whose instances' observed state differs from last time.
        The very read-only views of the last call are taken as unchanged (watch's
        PolicyState hands out a new view over a new dict on a change, never changing the
        old one), anything else is compared."""
        changed: set[str] = set()
        first_seen, returned = observed.first_seen, observed.returned
        if not _same_view(first_seen, self._first_seen_given) and first_seen != self._first_seen:
            changed.update(k for k, _ in first_seen.items() ^ self._first_seen.items())
            self._first_seen = dict(first_seen)  # a copy: the caller's may change
        self._first_seen_given = first_seen
        if not _same_view(returned, self._returned_given) and returned != self._returned:
            changed.update(k for k, _ in returned.items() ^ self._returned.items())
            self._returned = dict(returned)
        self._returned_given = returned
        if observed.dead != self._dead:
            changed.update(observed.dead ^ self._dead)
            self._dead = frozenset(observed.dead)
        for key in changed:
            name = self._owners.get(key)
            if name is not None:
                self._entries.pop(name, None)
                self.evicted.add(name)

    def get(
        self,
        name: str,
        instances: tuple[Any, ...],
        policy: Any,
        zone: str | None,
        now: datetime | None,
    ) -> T | None:
        entry = self._entries.get(name)
        if (
            entry is not None
            and (entry.instances is instances or entry.instances == instances)
            and (entry.policy is policy or entry.policy == policy)
            and entry.zone == zone
            and entry.window.holds(now)
        ):
            return entry.value
        return None

    def window(self, name: str) -> Window | None:
        """The window of `name`'s entry (None: no entry)."""
        entry = self._entries.get(name)
        return entry.window if entry is not None else None

    def put(
        self,
        name: str,
        instances: tuple[Any, ...],
        policy: Any,
        zone: str | None,
        window: Window,
        keys: Iterable[str],
        value: T,
    ) -> None:
        """Remember `value`; `keys` are the observed-state keys of every instance in it."""
        if window.never:
            self._entries.pop(name, None)
            return
        if len(self._entries) >= self.max_services or len(self._owners) >= self.max_keys:
            self.clear()
        owners = self._owners
        for key in keys:
            other = owners.get(key)
            if other is not None and other != name:
                self._entries.pop(other, None)  # a key in two services: drop the older entry
                self.evicted.add(other)
            owners[key] = name
        self._entries[name] = _Entry(instances, policy, zone, window, value)
