from __future__ import annotations

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.plan import make_plan
from nginxgen.spec import Spec
from nginxgen.watch.diff import diff_plans


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
