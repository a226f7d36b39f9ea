"""Each instance as the sidecar sees it: where the last plan puts it, the weight nginx
balances with now, its traffic over the last minute, and what nginx's passive checks
seem to say. It answers GET /status (the document `nginxgen status` shows, see
status/view.py) and sets the per-instance gauges of the sidecar's /metrics.

What is not promised: in reload mode nginx does not tell which peers its passive checks
hold out; `passive_failed` is read from /metrics (every attempt in the last
`fail_timeout` failed, and at least `max_fails` of them). A dynamic mode reads it, and
the weight in force, from the Lua balancer instead: it passes its own `InForce`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..model.plan import Plan, Standing
from ..spec import Spec
from ..status.traffic import Counts, PeerTraffic, Window
from .telemetry import Metrics

# At most this many instances get per-instance gauges (three series each); beyond it
# the gauges say nothing rather than flood a Prometheus (/status still lists them all).
# Their text is made again after each change: 0.25 s of CPU at 5,000 (benchmarks/status_view.py).
MAX_GAUGED_INSTANCES = 5_000


class InForce(Protocol):
    """Where the weight nginx balances with comes from."""

    def weights(self, service: str) -> Mapping[str, int] | None:
        """Peer address → weight in force (0: not a peer, or `down`); None: unknown."""
        ...

    def failed(self, service: str) -> Mapping[str, str]:
        """Peer address → why nginx's passive checks hold it out now."""
        ...


class ReloadMode:
    """In force in reload mode: the servers of the config that serves, and passive
    failures read from the traffic samples."""

    def __init__(
        self,
        spec: Callable[[], Spec],
        applied: Callable[[], Plan | None],
        traffic: PeerTraffic | None,
    ) -> None:
        self.spec, self.applied, self.traffic = spec, applied, traffic
        # The applied plan's weights by service, made once per plan (Plan.upstream scans).
        self._index: tuple[Plan, dict[str, dict[str, int]]] | None = None
        self._failing: dict[float, tuple[float | None, tuple[float, dict[str, Any]]]] = {}

    def weights(self, service: str) -> Mapping[str, int] | None:
        plan = self.applied()
        if plan is None:
            return None
        index = self._index
        if index is None or index[0] is not plan:
            stream = plan.surface.stream
            ups = (stream.upstreams if stream else ()) + plan.upstreams  # HTTP's win a name
            weights = {
                up.name: {s.address: 0 if s.down else s.weight for s in up.servers} for up in ups
            }
            index = self._index = (plan, weights)
        return index[1].get(service, {})

    def failed(self, service: str) -> Mapping[str, str]:
        spec = self.spec()
        own = spec.services.get(service)  # service_policy() builds a model per call
        health = own.health if own is not None else spec.defaults.health
        if self.traffic is None or not spec.nginx.metrics or health.max_fails == 0:
            return {}
        # One window per fail_timeout and sample, grouped by service: asked once per
        # service, this must not walk every peer every time.
        span, latest = health.fail_timeout, self.traffic.latest()
        cached = self._failing.get(span)
        if cached is None or cached[0] != latest:
            cached = self._failing[span] = (latest, failing(self.traffic.over(span)))
        seconds, peers = cached[1]
        return {
            peer: (
                f"nginx: {c.errors:.0f} of {c.requests:.0f} attempts failed in the last "
                f"{seconds:.0f} s (max_fails {health.max_fails})"
            )
            for peer, c in peers.get(service, {}).items()
            if c.errors >= health.max_fails
        }


def failing(window: Window) -> tuple[float, dict[str, dict[str, Counts]]]:
    """Per service, the peers whose every attempt in `window` failed. nginx holds a peer
    out for fail_timeout once max_fails of them fall within it (a peer held out gets no
    attempts, so the window ends when nginx tries it again)."""
    out: dict[str, dict[str, Counts]] = {}
    for (service, peer), c in window.peers.items():
        if c.errors > 0 and c.errors == c.requests:
            out.setdefault(service, {})[peer] = c
    return window.seconds, out


@dataclass(frozen=True)
class Row:
    """One instance in /status (status/view.py reads it back)."""

    id: str
    address: str
    state: str  # model.plan.STANDINGS, or passive_failed
    percent: int | None
    reason: str
    planned_weight: int
    weight: int | None
    requests: float | None
    errors: float | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class InstanceView:
    """The /status document and the per-instance gauges, from what the loop last
    planned and applied (read by reference: the loop replaces plans, never edits them)."""

    def __init__(
        self,
        spec: Callable[[], Spec],
        planned: Callable[[], Plan | None],
        in_force: InForce,
        *,
        traffic: PeerTraffic | None,  # None, or the spec's metrics off: no counts
        probe_errors: Callable[[], Mapping[str, str]] = dict,  # instance key → last error
        kept: Callable[[], Mapping[tuple[str, str], str]] = dict,  # (service, id) → why
        generation: Callable[[], str] = str,  # the one the sidecar applied
        served: Callable[[], str | None] = lambda: None,  # the one nginx answers with
        metrics: Metrics | None = None,
    ) -> None:
        self.spec, self.planned, self.in_force = spec, planned, in_force
        self.traffic = traffic
        self.probe_errors, self.generation, self.served = probe_errors, generation, served
        self.kept = kept
        self.metrics = metrics
        self._lock = threading.Lock()  # refresh runs on the loop's and the sampler's threads
        self._gauged: dict[str, tuple[object, ...]] = {}  # service → what its gauges show
        self._rows: dict[str, tuple[Row, ...]] = {}

    def rows(
        self, service: str, standings: tuple[Standing, ...], window: Window | None
    ) -> list[Row]:
        weights = self.in_force.weights(service)
        failed = self.in_force.failed(service)
        errors = self.probe_errors() if any(s.state == "pseudo_dead" for s in standings) else {}
        kept = self.kept()
        out = []
        for s in standings:
            state, reason = s.state, s.reason
            if state in ("serving", "warming") and s.address in failed:
                state, reason = "passive_failed", failed[s.address]
            elif state == "pseudo_dead":
                why = errors.get(instance_key_of(service, s))
                reason = f"{reason}: {why}" if why else reason
            note = kept.get((service, s.id)) if kept else None
            if note:
                reason = f"{reason}; {note}" if reason else note
            count = window.peers.get((service, s.address), Counts()) if window else None
            out.append(
                Row(
                    id=s.id,
                    address=s.address,
                    state=state,
                    percent=s.percent,
                    reason=reason,
                    planned_weight=s.weight,
                    weight=None if weights is None else weights.get(s.address, 0),
                    requests=None if count is None else count.requests,
                    errors=None if count is None else count.errors,
                )
            )
        return out

    def document(self) -> dict[str, Any]:
        """GET /status: see status/view.py for the fields."""
        plan = self.planned()
        counting = self.traffic is not None and self.spec().nginx.metrics
        window = self.traffic.last() if self.traffic is not None and counting else None
        services = {}
        if plan is not None:
            for name, standings in plan.standings.items():
                services[name] = [r.as_json() for r in self.rows(name, standings, window)]
        return {
            "generation": self.generation(),
            "served_generation": self.served(),
            "window_seconds": round(window.seconds, 1) if window else 0,
            "services": services,
        }

    def refresh(self) -> None:
        """Bring the per-instance gauges up to date; a service whose plan, config in
        force and passive failures are as last time is not looked at again."""
        metrics, plan = self.metrics, self.planned()
        if metrics is None or plan is None:
            return
        with self._lock:
            if _more_than(plan.standings.values(), MAX_GAUGED_INSTANCES):
                for name in list(self._gauged):
                    metrics.set_instances(name, ())
                self._gauged.clear()
                return
            for name in self._gauged.keys() - plan.standings.keys():
                metrics.set_instances(name, ())
                del self._gauged[name]
            for name, standings in plan.standings.items():
                weights = self.in_force.weights(name)
                failed = self.in_force.failed(name)
                key = (standings, weights, tuple(sorted(failed)))
                if self._gauged.get(name) == key:
                    continue
                rows = self.rows(name, standings, None)
                metrics.set_instances(name, tuple(rows))
                self._gauged[name] = key


def _more_than(groups: Iterable[tuple[Standing, ...]], limit: int) -> bool:
    """Whether the groups hold more than `limit` standings, counting no further than that
    (at 10,000 services × 10 a full count was the gauges' whole cost per push)."""
    total = 0
    for group in groups:
        total += len(group)
        if total > limit:
            return True
    return False


def instance_key_of(service: str, s: Standing) -> str:
    """model.catalog.instance_key for a Standing (the prober's key): service/id@address."""
    return f"{service}/{s.id}@{s.address}"
