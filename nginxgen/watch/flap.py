"""Flap damping: an instance that keeps turning on and off costs no reloads.

Every change between serving and not serving is a reload in reload mode, and every
reload closes kept-alive connections. An instance whose health flaps (up, down, up, ...
every few milliseconds) would cost one reload per debounce window, forever. BGP's route
flap damping is the model: count an instance's changes over a sliding `window`; past
`changes`, pin it in one state until it has not changed for `hold`, then let the
registry's word through again.

The pinned state is out of nginx, the one that costs the least traffic — unless the
instance is the last one its service would have serving, then in (as Envoy never
ejects every host: a service answering 503 to everyone is worse than one instance that
answers sometimes; nginx's passive checks skip it while it is down).

Time is an argument (a monotonic clock's seconds): tests drive it, `watch` passes
time.monotonic(). Changes are counted on every read (`observe`), including the reads
inside a debounce window that never reach nginx; `apply` pins what is held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from ..model.catalog import LIVE_STATES, Catalog, Instance, changed_since
from ..spec.watch import Flap

Key = tuple[str, str]  # (service, instance id)
NO_INSTANCES: tuple[Instance, ...] = ()


@dataclass
class _Track:
    """An instance that changed within the window (only those are tracked)."""

    last_serving: Instance | None = None  # its entry when it last turned serving
    changes: deque[float] = field(default_factory=deque)  # times, within the window
    last_change: float = float("-inf")
    held: bool = False


@dataclass(frozen=True)
class Damped:
    catalog: Catalog  # what to plan with
    held: tuple[str, ...] = ()  # every instance pinned now, for metrics and /healthz
    started: tuple[str, ...] = ()  # "service 'app' instance 'i1' is flapping ...", once
    released: tuple[str, ...] = ()  # pinned ones that have been stable for `hold`
    keys: frozenset[Key] = frozenset()  # the pinned ones as (service, instance id)


class FlapDamper:
    def __init__(self, config: Flap) -> None:
        self.config = config
        self._tracks: dict[Key, _Track] = {}
        self._said: set[Key] = set()  # held instances whose start was reported
        self._last: Mapping[str, tuple[Instance, ...]] | None = None  # the last read's services

    def observe(self, catalog: Catalog, now: float) -> None:
        """Count changes between serving and not serving since the last read.

        Only services whose instances differ from the last read are looked at in detail:
        the ones the catalog's map says changed (model/catalog.changed_since), or else
        every service at one tuple comparison each, less than the read itself.
        """
        if not self.config.enabled:
            return
        last, current = self._last, catalog.services
        self._last = current  # a catalog's services are never changed once made
        if last is None:
            return  # the first read: what is there now is no change
        names = changed_since(current, last)
        if names is not None:
            for name in sorted(names):
                had, has = last.get(name, NO_INSTANCES), current.get(name, NO_INSTANCES)
                if had is not has and had != has:
                    self._compare(name, had, has, now)
            return
        known = 0
        for name, after in current.items():
            before = last.get(name)
            if before is not None:
                known += 1
                if before is after or before == after:
                    continue
            self._compare(name, before or NO_INSTANCES, after, now)
        if known < len(last):  # services gone from the registry
            for name in last.keys() - current.keys():
                self._compare(name, last[name], NO_INSTANCES, now)

    def _compare(
        self, name: str, before: tuple[Instance, ...], after: tuple[Instance, ...], now: float
    ) -> None:
        was = {i.id for i in before if i.state in LIVE_STATES}
        serving = {i.id: i for i in after if i.state in LIVE_STATES}
        for instance_id in was ^ serving.keys():
            self._changed((name, instance_id), serving.get(instance_id), now)

    def _changed(self, key: Key, serving: Instance | None, now: float) -> None:
        track = self._tracks.setdefault(key, _Track())
        if serving is not None:
            track.last_serving = serving
        track.last_change = now
        track.changes.append(now)
        self._forget_before(track, now)
        if len(track.changes) > self.config.changes:
            track.held = True

    def _forget_before(self, track: _Track, now: float) -> None:
        while track.changes and track.changes[0] <= now - self.config.window:
            track.changes.popleft()

    def apply(self, catalog: Catalog, now: float) -> Damped:
        """`catalog` with every held instance pinned; releases the ones stable for `hold`."""
        if not self.config.enabled or not self._tracks:
            return Damped(catalog)
        released: list[str] = []
        for key, track in list(self._tracks.items()):
            self._forget_before(track, now)
            if track.held and now - track.last_change >= self.config.hold:
                track.held = False
                self._said.discard(key)
                released.append(f"{_label(key)}: stable for {self.config.hold:g}s, released")
            if not track.held and not track.changes:
                del self._tracks[key]  # quiet for a whole window: nothing to remember
        released.sort()  # one order, however the tracks came to be
        held = [k for k, t in self._tracks.items() if t.held]
        if not held:
            return Damped(catalog, released=tuple(released))

        services = dict(catalog.services)
        started: list[str] = []
        for service in sorted({s for s, _ in held}):
            mine = {i for s, i in held if s == service}
            pinned, where = self._pin(service, services.get(service, NO_INSTANCES), mine)
            services[service] = pinned
            for instance_id in sorted(mine):
                key = (service, instance_id)
                if key not in self._said:
                    self._said.add(key)
                    count = len(self._tracks[key].changes)
                    started.append(
                        f"{_label(key)} is flapping ({count} changes between serving and not "
                        f"within {self.config.window:g}s): held {where} until it has been "
                        f"stable for {self.config.hold:g}s"
                    )
        return Damped(
            replace(catalog, services=services),
            held=tuple(_label(k) for k in sorted(held)),
            keys=frozenset(held),
            started=tuple(started),
            released=tuple(released),
        )

    def _pin(
        self, service: str, instances: tuple[Instance, ...], held: set[str]
    ) -> tuple[tuple[Instance, ...], str]:
        """Held instances out (as `down`), or in (as `up`) when none other serves."""
        others = any(i.state in LIVE_STATES and i.id not in held for i in instances)
        if others:
            pinned = [replace(i, state="down") if i.id in held else i for i in instances]
            return tuple(pinned), "out of nginx"
        pinned = [replace(i, state="up") if i.id in held else i for i in instances]
        present = {i.id for i in instances}
        for instance_id in sorted(held - present):  # gone from this read: as it last served
            last = self._tracks[(service, instance_id)].last_serving
            if last is not None:
                pinned.append(last)
        return tuple(pinned), "in nginx (the last instance its service has serving)"

    def next_release(self) -> float | None:
        """When the earliest held instance is due for release if it stays quiet."""
        due = [t.last_change + self.config.hold for t in self._tracks.values() if t.held]
        return min(due) if due else None


def _label(key: Key) -> str:
    return f"service {key[0]!r} instance {key[1]!r}"
