"""The sidecar's stages give the same answers whether or not the catalog says what changed.

A catalog whose services are a ServiceMap (model/catalog.derive) lets each stage look at
the changed services only. Two pipelines run side by side on random sequences of reads:
one fed maps that name what changed (with extra names, and plain dicts in between, as a
source may hand out), the other fresh plain dicts, equal in value, that share nothing.
Every stage must answer the same in both: the removal guard, flap damping, the host
check, policy state, the per-service gauges and the catalog fingerprint.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import Catalog, Instance, ServiceDigests, derive
from nginxgen.sources.resolve import HostKinds
from nginxgen.spec import RemovalGuard
from nginxgen.spec.watch import Flap
from nginxgen.watch.flap import FlapDamper
from nginxgen.watch.guard import RemovalHold
from nginxgen.watch.policy_state import PolicyState
from nginxgen.watch.telemetry import Metrics

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
NAMES = ("a", "b", "c", "d")
HOSTS = ("10.0.0.1", "10.0.0.2", "backend.example", "::1")
STATES = ("up", "up", "down", "draining")


class Stages:
    """One of each stage, driven as watch/apply.py drives them."""

    def __init__(self) -> None:
        self.hold = RemovalHold(RemovalGuard(max_removed_share=0.5, confirm_reads=2))
        self.flaps = FlapDamper(Flap(changes=1, window=5, hold=3))
        self.hosts = HostKinds()
        self.state = PolicyState(None)
        self.metrics = Metrics()
        self.digests = ServiceDigests()
        self.accepted: Catalog | None = None

    def run(self, catalog: Catalog, n: int, dead: frozenset[str]) -> dict[str, Any]:
        self.flaps.observe(catalog, float(n))
        guarded = self.hold.check(self.accepted, catalog, float(n))
        self.accepted = guarded.catalog
        damped = self.flaps.apply(guarded.catalog, float(n))
        self.metrics.set_catalog(damped.catalog)
        observed = self.state.observe(damped.catalog, T0 + timedelta(seconds=n), dead)
        return {
            "guarded": dict(guarded.catalog.services),
            "held": guarded.held,
            "released": guarded.released,
            "damped": (dict(damped.catalog.services), damped.held, damped.started),
            "released_flaps": damped.released,
            "hosts": self.hosts.names_in(damped.catalog),
            "first_seen": dict(observed.first_seen),
            "returned": dict(observed.returned),
            "gauges": sorted(
                (s.labels["service"], s.value)
                for m in self.metrics.registry.collect()
                if m.name == "nginxgen_service_instances"
                for s in m.samples
            ),
            "fingerprint": damped.catalog.fingerprint(self.digests),
            "count": damped.catalog.instance_count,
        }


row = st.tuples(st.integers(1, 4), st.sampled_from(HOSTS), st.sampled_from(STATES))
step = st.fixed_dictionaries(
    {
        "services": st.dictionaries(
            st.sampled_from(NAMES), st.lists(row, max_size=4, unique_by=lambda r: r[0])
        ),
        "extra": st.sets(st.sampled_from(NAMES), max_size=2),
        "plain": st.integers(0, 5),  # 0: this read's map is a plain dict
        "dead": st.sets(st.tuples(st.sampled_from(NAMES), st.integers(1, 4)), max_size=2),
    }
)


def services_of(s: dict) -> dict[str, tuple[Instance, ...]]:
    return {
        name: tuple(Instance(f"i{n}", name, host, 80, 1, state) for n, host, state in rows)
        for name, rows in sorted(s["services"].items())
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=14))
def test_every_stage_answers_the_same_with_or_without_what_changed(steps: list[dict]) -> None:
    told, plain = Stages(), Stages()
    last: dict[str, tuple[Instance, ...]] | None = None
    for n, s in enumerate(steps):
        fresh = services_of(s)
        old = last or {}
        kept = {k: old[k] if old.get(k) == v else v for k, v in fresh.items()}
        moved = {k for k in kept.keys() | old.keys() if old.get(k) is not kept.get(k)}
        mine = kept if s["plain"] == 0 else derive(last, kept, moved | s["extra"])
        dead = frozenset(f"{svc}/i{i}@{HOSTS[0]}:80" for svc, i in s["dead"])
        a = told.run(Catalog(mine), n, dead)
        b = plain.run(Catalog(services_of(s)), n, dead)
        assert a == b, f"step {n}"
        last = mine
