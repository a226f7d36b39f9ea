"""plan/last_pass.py: in dynamic mode a pass re-plans only the services that changed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import Catalog, derive
from nginxgen.model.observed import Observed
from nginxgen.model.plan import Plan, changed_upstreams, same_structure
from nginxgen.model.validate import CatalogBuilder
from nginxgen.plan import PlanMemo, make_plan
from nginxgen.plan.endpoints import changed_endpoints
from nginxgen.plan.memo import ServiceMemo
from nginxgen.spec import Spec, parse_spec

from .test_memo import SPEC, at, build, step

DYNAMIC = SPEC.replace("nginx: {endpoints: reload}\n", "")


def spec() -> Spec:
    sp = parse_spec(DYNAMIC, Path("/tmp/nginxgen.yaml"))
    assert sp.nginx.dynamic
    return sp


def sharing(last: Catalog | None, cat: Catalog) -> Catalog:
    """`cat` holding `last`'s very tuple for each service that did not change, as the
    sources hand them out."""
    if last is None:
        return cat
    old = last.services
    kept = {n: old[n] if old.get(n) == t else t for n, t in cat.services.items()}
    return Catalog(kept, cat.dropped, cat.source)


def catalog(weight_of_a1: int = 1, *, b: bool = True) -> Catalog:
    cb = CatalogBuilder("t")
    cb.add("a", id="a1", address="10.0.0.1:80", weight=weight_of_a1)
    if b:
        cb.add("b", id="b1", address="10.0.1.1:80")
    cb.add("c", id="c1", address="10.0.2.1:80")
    return cb.build()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names the plan memo is asked about (a reused service is not asked)."""
    asked: list[str] = []
    get = ServiceMemo.get

    def counting(self, name, *args):  # type: ignore[no-untyped-def]
        asked.append(name)
        return get(self, name, *args)

    monkeypatch.setattr(ServiceMemo, "get", counting)
    return asked


def told(last: Catalog | None, cat: Catalog, extra: set[str]) -> Catalog:
    """`sharing`, with a map that names what changed since `last` (and `extra` names)."""
    shared = sharing(last, cat)
    old = last.services if last is not None else {}
    moved = {
        n for n in shared.services.keys() | old.keys() if old.get(n) is not shared.services.get(n)
    }
    services = derive(old if last is not None else None, shared.services, moved | extra)
    return replace(shared, services=services)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=6), st.lists(st.booleans(), min_size=6, max_size=6))
def test_reused_passes_equal_fresh_plans(steps: list[dict], maps: list[bool]) -> None:
    """...and what a push compares (the structure, the endpoints that changed) is what a
    comparison of every upstream gives, when the plans' revisions say what changed."""
    sp, memo, last = spec(), PlanMemo(), None
    before: Plan | None = None
    for s, as_map in zip(steps, maps, strict=False):
        cat, now, obs = build(s)
        cat = told(last, cat, {"b"}) if as_map else sharing(last, cat)
        plan = make_plan(sp, cat, now, obs, memo=memo)
        assert plan == make_plan(sp, cat, now, obs)
        if before is not None:
            bare_old, bare = replace(before, revision=None), replace(plan, revision=None)
            assert same_structure(before, plan) == (bare_old.structure == bare.structure)
            assert changed_endpoints(before, plan) == changed_endpoints(bare_old, bare)
        before, last = plan, cat


def test_a_revision_names_the_changed_upstreams_only() -> None:
    sp, memo = spec(), PlanMemo()
    first = catalog()
    before = make_plan(sp, first, at(0), memo=memo)
    after = make_plan(sp, told(first, catalog(weight_of_a1=3), set()), at(0), memo=memo)
    assert changed_upstreams(before, after) == {"a"}
    assert list(changed_endpoints(before, after)) == ["a"]
    assert same_structure(before, after)
    copied = replace(after, upstreams=after.upstreams[:1])
    assert changed_upstreams(before, copied) is None, "other upstreams: not this revision"
    assert not same_structure(before, copied)


def test_a_changed_service_is_replanned_and_the_others_reused(lookups: list[str]) -> None:
    sp, memo = spec(), PlanMemo()
    first = catalog()
    before = make_plan(sp, first, at(0), memo=memo)
    assert lookups == ["a", "b", "c"]  # the first pass walks every service
    lookups.clear()
    changed = sharing(first, catalog(weight_of_a1=3))
    after = make_plan(sp, changed, at(0), memo=memo)
    assert lookups == ["a"]
    old, new = {u.name: u for u in before.upstreams}, {u.name: u for u in after.upstreams}
    assert new["a"].servers[0].weight == 3
    assert new["b"] is old["b"] and new["c"] is old["c"]
    assert after == make_plan(sp, changed, at(0))
    assert before.standings["a"] != after.standings["a"]  # the earlier plan is left alone


def test_a_removed_service_is_dropped_and_comes_back(lookups: list[str]) -> None:
    sp, memo = spec(), PlanMemo()
    first = catalog()
    make_plan(sp, first, at(0), memo=memo)
    lookups.clear()
    without = sharing(first, catalog(b=False))
    gone = make_plan(sp, without, at(0), memo=memo)
    assert lookups == []  # b is not asked about: it is not there
    assert "service 'b': not in the registry; its routes answer 503" in gone.notes
    assert "b" not in gone.standings and gone.upstream("b").servers == ()
    assert gone == make_plan(sp, without, at(0))
    back = sharing(without, catalog())
    lookups.clear()
    again = make_plan(sp, back, at(0), memo=memo)
    assert lookups == ["b"]
    assert list(again.standings) == ["a", "b", "c"]  # spec order, as a full pass
    assert again == make_plan(sp, back, at(0))


def test_an_observed_change_replans_its_service_with_the_same_tuples(
    lookups: list[str],
) -> None:
    sp, memo, cat = spec(), PlanMemo(), catalog()
    make_plan(sp, cat, at(0), memo=memo)
    lookups.clear()
    dead = Observed(dead=frozenset({"b/b1@10.0.1.1:80"}))
    plan = make_plan(sp, cat, at(0), dead, memo=memo)
    assert lookups == ["b"]
    assert plan == make_plan(sp, cat, at(0), dead)


def test_a_cleared_memo_or_another_spec_walks_every_service(lookups: list[str]) -> None:
    sp, memo, cat = spec(), PlanMemo(), catalog()
    make_plan(sp, cat, at(0), memo=memo)
    memo.services.clear()
    lookups.clear()
    make_plan(sp, cat, at(0), memo=memo)
    assert lookups == ["a", "b", "c"]
    lookups.clear()
    make_plan(spec(), cat, at(0), memo=memo)  # an equal spec, another object
    assert lookups == ["a", "b", "c"]


def test_refused_peers_keep_their_notes_while_another_service_changes() -> None:
    sp, memo = spec(), PlanMemo()
    cb = CatalogBuilder("t")
    cb.add("a", id="a1", address="10.0.0.1:80")
    cb.add("b", id="b1", address="backend.example:80")  # no IP literal: left out
    cb.add("c", id="c1", address="10.0.2.1:80")
    first = cb.build()
    refused = "service 'b' instance 'b1': backend.example:80 is not an IP address"
    assert refused in " ".join(make_plan(sp, first, at(0), memo=memo).notes)
    changed = dict(first.services)
    changed["a"] = catalog(weight_of_a1=4).services["a"]
    cat = Catalog(changed, first.dropped, first.source)
    plan = make_plan(sp, cat, at(0), memo=memo)
    assert refused in " ".join(plan.notes)
    assert plan == make_plan(sp, cat, at(0))
