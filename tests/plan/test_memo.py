"""make_plan's per-service memo: reused results must equal freshly planned ones, always.

The property test drives one memo through random sequences of catalogs, clocks and
observed state (warm-up ramps, returns, pseudo-dead keys, backups, hash balancing) and
compares every plan with one made by an empty memo.
"""

from __future__ import annotations

import gc
import weakref
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import Catalog
from nginxgen.model.observed import Observed
from nginxgen.model.validate import CatalogBuilder
from nginxgen.plan import PlanMemo, make_plan
from nginxgen.spec import Spec, parse_spec
from nginxgen.util.heap import Settler, collector_paused
from nginxgen.verify.parse import parse_text

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
SERVICES = ("a", "b", "c")

SPEC = """\
registry: {kind: file, path: s.yaml}
nginx: {endpoints: reload}
defaults: {warmup: {step_percent: 25, period: 10s}}
services: {b: {balance: hash $request_uri}, c: {balance: random, warmup: off}}
routes: [{path: /a/, service: a}, {path: /b/, service: b}, {path: /c/, service: c}]
"""


def spec() -> Spec:
    return parse_spec(SPEC, Path("/tmp/nginxgen.yaml"))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fresh_plan(sp: Spec, cat: Catalog, now: datetime | None, obs: Observed):
    """The same plan from an empty memo (make_plan without one plans from scratch)."""
    return make_plan(sp, cat, now, obs)


instance = st.fixed_dictionaries(
    {
        "service": st.sampled_from(SERVICES),
        "n": st.integers(1, 4),
        "weight": st.integers(1, 5),
        "state": st.sampled_from(["up", "up", "up", "starting", "draining", "down"]),
        "registered": st.one_of(st.none(), st.integers(-100, 60)),
        "backup": st.booleans(),
    }
)
who = st.tuples(st.sampled_from(SERVICES), st.integers(1, 4))  # an observed-state key
step = st.fixed_dictionaries(
    {
        "instances": st.lists(instance, max_size=8),
        "now": st.one_of(st.none(), st.integers(0, 80)),
        "seen": st.dictionaries(who, st.integers(-50, 50), max_size=3),
        "back": st.dictionaries(who, st.integers(-50, 50), max_size=2),
        "dead": st.sets(who, max_size=2),
    }
)


def build(s: dict) -> tuple[Catalog, datetime | None, Observed]:
    b = CatalogBuilder("t")
    for name in SERVICES:
        b.service(name)
    for i in s["instances"]:
        reg = None if i["registered"] is None else at(i["registered"])
        b.add(
            i["service"],
            id=f"i{i['n']}",
            address=f"10.0.0.{i['n']}:80",
            weight=i["weight"],
            state=i["state"],
            registered_at=reg,
            tags=["backup"] if i["backup"] else [],
        )

    def key(who: tuple[str, int]) -> str:
        return f"{who[0]}/i{who[1]}@10.0.0.{who[1]}:80"

    obs = Observed(
        first_seen={key(k): at(t) for k, t in s["seen"].items()},
        returned={key(k): at(t) for k, t in s["back"].items()},
        dead=frozenset(key(k) for k in s["dead"]),
    )
    return b.build(), None if s["now"] is None else at(s["now"]), obs


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=6))
def test_reused_service_plans_equal_fresh_ones(steps: list[dict]) -> None:
    sp, memo = spec(), PlanMemo()
    for s in steps:
        cat, now, obs = build(s)
        assert make_plan(sp, cat, now, obs, memo=memo) == fresh_plan(sp, cat, now, obs)


def catalog(weight_of_a1: int = 1) -> Catalog:
    b = CatalogBuilder("t")
    b.add("a", id="a1", address="10.0.0.1:80", weight=weight_of_a1)
    b.add("b", id="b1", address="10.0.1.1:80")
    b.add("c", id="c1", address="10.0.2.1:80")
    return b.build()


def test_one_changed_instance_replans_only_its_service() -> None:
    sp, memo = spec(), PlanMemo()
    before = make_plan(sp, catalog(), at(0), memo=memo)
    after = make_plan(sp, catalog(weight_of_a1=3), at(0), memo=memo)
    old, new = {u.name: u for u in before.upstreams}, {u.name: u for u in after.upstreams}
    assert new["a"].servers[0].weight == 3
    assert new["b"] is old["b"] and new["c"] is old["c"]  # reused, so render hits its cache
    assert after.locations is before.locations  # same services live: same Location tuple


def test_a_ramp_result_is_reused_within_its_step_only() -> None:
    sp, memo = spec(), PlanMemo()  # 25 % steps every 10 s
    b = CatalogBuilder("t")  # an old instance too: alone, a new one starts at full weight
    b.add("b", id="old", address="10.0.1.9:80", registered_at=at(-3600))
    b.add("b", id="b1", address="10.0.1.1:80", registered_at=at(0))
    cat = b.build()
    first = make_plan(sp, cat, at(1), memo=memo)
    same_step = make_plan(sp, cat, at(9), memo=memo)
    next_step = make_plan(sp, cat, at(11), memo=memo)
    assert same_step.upstreams[0] is first.upstreams[0]
    assert first.next_change_at == same_step.next_change_at == at(10)
    assert next_step.upstreams[0] != first.upstreams[0]
    assert next_step.next_change_at == at(20)
    back = make_plan(sp, cat, at(-5), memo=memo)  # the clock went back
    assert back == fresh_plan(sp, cat, at(-5), Observed())


def test_a_plan_made_without_a_clock_is_not_reused_with_one() -> None:
    """Without `now` nothing ramps; the same instances with a clock do (the note says so)."""
    sp, memo = spec(), PlanMemo()
    b = CatalogBuilder("t")
    b.add("a", id="a1", address="10.0.0.1:80", registered_at=at(0))
    cat = b.build()
    clockless = make_plan(sp, cat, None, memo=memo)
    assert not any("every instance is new" in n for n in clockless.notes)
    clocked = make_plan(sp, cat, at(5), memo=memo)
    assert clocked == fresh_plan(sp, cat, at(5), Observed())
    assert "service 'a': every instance is new (full redeploy)" in " ".join(clocked.notes)
    assert make_plan(sp, cat, None, memo=memo) == clockless  # and back: the clockless one


def test_observed_changes_replan_the_services_they_name() -> None:
    sp, memo = spec(), PlanMemo()
    b = CatalogBuilder("t")
    b.add("a", id="x", address="10.0.0.1:80")
    b.add("a", id="y", address="10.0.0.2:80")
    b.add("c", id="z", address="10.0.2.1:80")
    cat = b.build()
    healthy = make_plan(sp, cat, at(0), memo=memo)
    observed = Observed(dead=frozenset({"a/y@10.0.0.2:80"}))
    dead = make_plan(sp, cat, at(0), observed, memo=memo)
    assert [s.instance_id for s in dead.upstreams[0].servers] == ["x"]
    assert dead.upstreams[1] is healthy.upstreams[1]  # c untouched
    again = make_plan(sp, cat, at(0), memo=memo)
    assert [s.instance_id for s in again.upstreams[0].servers] == ["x", "y"]


def test_a_changed_policy_is_never_served_from_the_memo() -> None:
    cat, memo = catalog(), PlanMemo()
    first = make_plan(spec(), cat, at(0), memo=memo)
    other = parse_spec(SPEC.replace("balance: random", "balance: least_conn"), Path("/tmp/x"))
    second = make_plan(other, cat, at(0), memo=memo)
    assert second.upstream("c").balance == ("least_conn",)
    assert first.upstream("c").balance == ("random",)


def test_parsed_trees_are_freed_without_the_cycle_collector() -> None:
    blocks = "".join(f"upstream u{i} {{ server 10.0.0.1:{i + 1}; }}\n" for i in range(50))
    text = "http {\n" + blocks
    gc.collect()
    with collector_paused():
        payload = parse_text(text + "}\n", strict=True)
        assert len(payload["config"][0]["parsed"][0]["block"]) == 50
        del payload
        assert gc.collect() < 100  # crossplane's closure cycle, not the 300-object tree


def test_collector_pause_nests_and_restores() -> None:
    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError
    assert gc.isenabled()


def test_settle_collects_new_cycles_and_keeps_survivors_frozen() -> None:
    class Node:
        pass

    heap = Settler()
    heap.settle()
    survivor = Node()
    cycle = Node()
    cycle.self = cycle  # type: ignore[attr-defined]
    gone = weakref.ref(cycle)
    del cycle
    heap.settle()  # a young collection: the new cycle goes, the survivor is frozen
    assert gone() is None
    assert gc.get_freeze_count() > 0
    assert survivor is not None
    gc.unfreeze()


def test_a_light_settle_collects_young_cycles_and_checks_in_full_every_so_often() -> None:
    class Node:
        pass

    heap = Settler()
    try:
        heap.settle_light()  # nothing settled yet: a full settle
        assert heap.frozen_after_full > 0
        cycle = Node()
        cycle.self = cycle  # type: ignore[attr-defined]
        gone = weakref.ref(cycle)
        del cycle
        heap.settle_light()
        assert gone() is None and heap._light == 1
        for _ in range(Settler.FULL_CHECK_EVERY - 1):
            heap.settle_light()
        assert heap._light == 0, "the 64th light settle was a full one"
    finally:
        gc.unfreeze()
