"""Guarded rollout (`split.guard`): a canary whose 5xx share over the window crosses the
line goes back to 0, and stays there until an operator shifts again.

Fed samples of nginx's per-version counters (`nginxgen_requests_total{service,version,
status}` on /metrics) on the watcher's clock; decides, does no I/O. A trip pins the
service's weights here (the watcher plans with the pin, so it holds while the registry is
down) and the watcher also writes them into the registry as an override, so the fleet
follows. The pin ends when the registry's override for that service changes after the
trip: an operator's `nginxgen shift`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..registry.shift import shifted, to_text
from ..spec.split import Split
from ..status.traffic import Counts, PeerKey, PeerTraffic


@dataclass(frozen=True)
class Trip:
    service: str
    version: str
    requests: int
    errors: int
    seconds: float
    override: str  # the weights with the canary at 0, as an override's text

    def __str__(self) -> str:
        share = 100.0 * self.errors / self.requests if self.requests else 0.0
        return (
            f"split guard: service {self.service!r} version {self.version!r} answered "
            f"{self.errors} 5xx of {self.requests} requests ({share:.1f} %) in the last "
            f"{self.seconds:.0f}s; its weight goes back to 0 until an operator shifts"
        )


@dataclass
class _Pin:
    override: str  # what the watcher plans with
    registry_text: str | None  # the registry's override when the guard tripped


class SplitGuard:
    def __init__(self) -> None:
        self._traffic: dict[str, PeerTraffic] = {}  # per service: its guard's window
        self._pins: dict[str, _Pin] = {}

    def observe(
        self,
        now: float,
        counts: Mapping[PeerKey, Counts],
        splits: Mapping[str, Split],
        in_force: Mapping[str, Mapping[str, float]],
    ) -> list[Trip]:
        """One sample of the counters (`now`: the watcher's monotonic clock). `in_force`:
        the configured weights per service now. Returns the guards that tripped."""
        trips = []
        for service, split in splits.items():
            guard = split.guard
            if guard is None:
                continue
            traffic = self._traffic.get(service)
            if traffic is None or traffic.window != guard.window:
                traffic = self._traffic[service] = PeerTraffic(guard.window)
            traffic.add(now, {k: v for k, v in counts.items() if k[0] == service})
            if service in self._pins:
                continue
            weights = in_force.get(service, split.weights)
            if weights.get(guard.version, 0.0) <= 0:
                continue  # nothing to roll back
            seen = traffic.last()
            c = seen.peers.get((service, guard.version), Counts())
            if c.requests < guard.min_requests or seen.seconds <= 0:
                continue
            if 100.0 * c.errors / c.requests <= guard.max_5xx_percent:
                continue
            back = shifted(split, weights, {guard.version: 0.0})
            trips.append(
                Trip(
                    service,
                    guard.version,
                    int(c.requests),
                    int(c.errors),
                    seen.seconds,
                    to_text(back),
                )
            )
        return trips

    def pin(self, trip: Trip, registry_text: str | None) -> None:
        self._pins[trip.service] = _Pin(trip.override, registry_text)

    def overrides(self, registry: Mapping[str, str]) -> dict[str, str]:
        """The overrides to plan with: the registry's, with the pins on top. A pin whose
        registry override changed since its trip (the guard's own write aside) ends."""
        out = dict(registry)
        for service, pin in list(self._pins.items()):
            now = registry.get(service)
            if not _same(now, pin.registry_text) and not _same(now, pin.override):
                del self._pins[service]  # an operator shifted
                self._traffic.pop(service, None)  # judge the new weights afresh
                continue
            out[service] = pin.override
        return out

    @property
    def pinned(self) -> tuple[str, ...]:
        return tuple(sorted(self._pins))


def _same(a: str | None, b: str | None) -> bool:
    """Two overrides alike as JSON (a file registry stores them re-serialized)."""
    if a is None or b is None:
        return a is b
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return a == b
