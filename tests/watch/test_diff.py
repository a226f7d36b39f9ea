from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.plan import PlanMemo, make_plan
from nginxgen.spec import Spec
from nginxgen.watch.diff import diff_plans
from tests.plan.test_last_pass import catalog as last_pass_catalog
from tests.plan.test_last_pass import sharing, told
from tests.plan.test_last_pass import spec as last_pass_spec
from tests.plan.test_memo import at, build, step


def spec() -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "routes": [{"path": "/a/", "service": "a"}, {"path": "/b/", "service": "b"}],
        }
    )


def catalog(**services: list[tuple[int, int]]) -> Catalog:
    return Catalog(
        {
            name: tuple(Instance(f"{name}{p}", name, "127.0.0.1", p, weight=w) for p, w in insts)
            for name, insts in services.items()
        }
    )


def test_diff_names_services_servers_and_weights():
    old = make_plan(spec(), catalog(a=[(1, 1), (2, 1)]))
    new = make_plan(spec(), catalog(a=[(2, 5), (3, 1)], b=[(4, 1)]))
    d = diff_plans(old, new)
    assert d.services_added == ("b",)
    assert d.servers_added == ("a 127.0.0.1:3",)
    assert d.servers_removed == ("a 127.0.0.1:1",)
    assert d.reweighted == ("a 127.0.0.1:2 1->5",)
    assert "services added: b" in d.summary() and "reweighted" in d.summary()
    back = diff_plans(new, make_plan(spec(), catalog(a=[(2, 5), (3, 1)])))
    assert back.services_removed == ("b",)


def test_no_previous_plan_and_no_change():
    plan = make_plan(spec(), catalog(a=[(1, 1)]))
    assert diff_plans(None, plan).services_added == ("a",)
    same = diff_plans(plan, make_plan(spec(), catalog(a=[(1, 1)])))
    assert same.empty and same.summary() == "no change"


@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=2, max_size=6), st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_a_diff_restricted_to_the_revision_equals_the_full_walk(
    steps: list[dict], kinds: list[int]
) -> None:
    """Plans from one memo (the revision names what changed; with a map or not), and now
    and then one from scratch (no lineage: the full walk): the same diff either way."""
    sp, memo = last_pass_spec(), PlanMemo()
    last, before = None, None
    for s, kind in zip(steps, kinds, strict=False):
        cat, now, obs = build(s)
        cat = told(last, cat, {"b"}) if kind == 1 else sharing(last, cat)
        plan = (
            make_plan(sp, cat, now, obs) if kind == 3 else make_plan(sp, cat, now, obs, memo=memo)
        )
        if before is not None:
            bare_old, bare = replace(before, revision=None), replace(plan, revision=None)
            assert diff_plans(before, plan) == diff_plans(bare_old, bare)
        before, last = plan, cat


def test_a_derived_plan_is_diffed_by_its_changed_upstreams_only(monkeypatch) -> None:
    from nginxgen.watch import diff

    sp, memo = last_pass_spec(), PlanMemo()
    first = last_pass_catalog()
    old = make_plan(sp, first, at(0), memo=memo)
    new = make_plan(sp, told(first, last_pass_catalog(weight_of_a1=3), set()), at(0), memo=memo)
    seen: list[str] = []
    serving = diff._serving

    def counting(upstreams):  # type: ignore[no-untyped-def]
        ups = list(upstreams)
        seen.extend(u.name for u in ups)
        return serving(ups)

    monkeypatch.setattr(diff, "_serving", counting)
    d = diff_plans(old, new)
    assert d.reweighted == ("a 10.0.0.1:80 1->3",) and not d.other
    assert seen == ["a", "a"], "b and c are the very objects of the plan before"
    seen.clear()
    assert diff_plans(replace(old, revision=None), new) == d
    assert sorted(seen) == ["a", "a", "b", "b", "c", "c"], "no lineage: every upstream"


def _draining(name: str, *ports: int) -> tuple[Instance, ...]:
    return tuple(Instance(f"{name}{p}", name, "127.0.0.1", p, state="draining") for p in ports)


def test_a_service_whose_instances_all_drain_is_unserved_not_removed():
    old = make_plan(spec(), catalog(a=[(1, 1)], b=[(2, 1)]))
    drained = make_plan(spec(), Catalog({**catalog(a=[(1, 1)]).services, "b": _draining("b", 2)}))
    d = diff_plans(old, drained)
    assert d.services_removed == () and d.services_unserved == ("b: every instance draining",)
    assert d.summary() == "b: every instance draining"
    back = diff_plans(drained, old)
    assert back.services_added == () and back.summary() == "now serving: b"
    gone = diff_plans(old, make_plan(spec(), catalog(a=[(1, 1)])))
    assert gone.summary() == "services removed: b"  # not in the registry any more


def test_a_reload_with_the_same_plan_says_why_alone():
    plan = make_plan(spec(), catalog(a=[(1, 1)]))
    same = diff_plans(plan, make_plan(spec(), catalog(a=[(1, 1)])))
    assert same.summary(why="spec reloaded") == "spec reloaded"  # not "no change (...)"
    moved = diff_plans(plan, make_plan(spec(), catalog(a=[(2, 1)])))
    assert moved.summary(why="spec reloaded") == (
        "servers added: a 127.0.0.1:2; servers removed: a 127.0.0.1:1 (spec reloaded)"
    )
