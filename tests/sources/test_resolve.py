"""sources/resolve.py drop_unresolvable: its answers keep the catalog's lineage.

A catalog with host names goes through drop_unresolvable on every plan pass. Its answer
derives from the last answer (model/catalog.derive), so the stages after it (the plan
memo, the catalog fingerprint) still look at the changed services only — and answer
exactly what they answer for fresh plain dicts that share nothing. Names are resolved by
a fake here: which of them resolve is part of each step, so it changes between passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import Catalog, Instance, ServiceDigests, changed_since, derive
from nginxgen.plan import PlanMemo, make_plan
from nginxgen.sources import resolve
from nginxgen.sources.resolve import HostKinds, drop_unresolvable
from nginxgen.spec import Spec, parse_spec

from ..plan.test_memo import at

NAMES = ("a", "b", "c", "d")
HOSTS = ("10.0.0.1", "10.0.0.2", "one.example", "two.example")
SPEC = """\
registry: {kind: file, path: s.yaml}
routes: [{path: /a/, service: a}, {path: /b/, service: b}, {path: /c/, service: c},
         {path: /d/, service: d}]
"""


def spec(mode: str) -> Spec:
    return parse_spec(SPEC + f"nginx: {{endpoints: {mode}}}\n", Path("/tmp/nginxgen.yaml"))


@pytest.fixture
def resolvable(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The names that resolve now (no DNS): a test changes the set between passes."""
    names: set[str] = set()
    monkeypatch.setattr(resolve, "_resolves", lambda host: host in names)
    return names


def inst(service: str, n: int, host: str) -> Instance:
    return Instance(f"i{n}", service, host, 80)


def test_an_answer_derives_from_the_last_one(resolvable: set[str]) -> None:
    hosts = HostKinds()
    first = derive(
        None,
        {
            "a": (inst("a", 1, "10.0.0.1"),),
            "b": (inst("b", 1, "10.0.0.2"), inst("b", 2, "one.example")),
            "c": (inst("c", 1, "10.0.0.1"),),
        },
        {"a", "b", "c"},
    )
    one = drop_unresolvable(Catalog(first), hosts)
    assert one.services == {**first, "b": first["b"][:1]}
    assert [str(d) for d in one.dropped] == [
        "service 'b' instance 'i2': host 'one.example' does not resolve"
    ]
    second = derive(first, {**first, "c": (inst("c", 1, "10.0.0.2"),)}, {"c"})
    two = drop_unresolvable(Catalog(second), hosts)
    assert changed_since(two.services, one.services) == {"c"}
    assert two.services["b"] is one.services["b"], "the same answer: the same tuple"
    assert two.services["a"] is first["a"]
    resolvable.add("one.example")  # the name resolves now: b gets its instance back
    three = drop_unresolvable(Catalog(second), hosts)
    assert changed_since(three.services, two.services) == {"b"}
    assert three.services["b"] is first["b"] and not three.dropped
    assert three.instance_count == 4


row = st.tuples(st.integers(1, 3), st.sampled_from(HOSTS))
step = st.fixed_dictionaries(
    {
        "services": st.dictionaries(
            st.sampled_from(NAMES), st.lists(row, min_size=1, max_size=3, unique_by=lambda r: r[0])
        ),
        "extra": st.sets(st.sampled_from(NAMES), max_size=2),
        "plain": st.integers(0, 5),  # 0: this read's map is a plain dict
        "resolvable": st.sets(st.sampled_from(HOSTS[2:])),
    }
)


def services_of(s: dict) -> dict[str, tuple[Instance, ...]]:
    return {
        name: tuple(inst(name, n, host) for n, host in rows)
        for name, rows in sorted(s["services"].items())
    }


# `resolvable` is set afresh at every step: a fixture shared by the examples is fine.
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(step, min_size=1, max_size=10), st.sampled_from(("dynamic", "reload")))
def test_the_stages_after_it_answer_the_same_with_or_without_what_changed(
    resolvable: set[str], steps: list[dict], mode: str
) -> None:
    sp = spec(mode)
    hosts, memo, digests = HostKinds(), PlanMemo(), ServiceDigests()  # one pipeline's
    plain_hosts, plain_memo = HostKinds(), PlanMemo()  # the other's, fed plain dicts
    last: dict[str, tuple[Instance, ...]] | None = None
    answers: list[Catalog] = []
    for n, s in enumerate(steps):
        resolvable.clear()
        resolvable.update(s["resolvable"])
        fresh = services_of(s)
        old = last or {}
        kept = {k: old[k] if old.get(k) == v else v for k, v in fresh.items()}
        moved = {k for k in kept.keys() | old.keys() if old.get(k) is not kept.get(k)}
        mine = kept if s["plain"] == 0 else derive(last, kept, moved | s["extra"])
        a = drop_unresolvable(Catalog(mine), hosts)
        b = drop_unresolvable(Catalog(services_of(s)), plain_hosts)
        assert dict(a.services) == dict(b.services) and a.dropped == b.dropped, f"step {n}"
        for earlier in answers:  # never misses a service that differs
            names = changed_since(a.services, earlier.services)
            if names is not None:
                now_, then = a.services, earlier.services
                assert {
                    k for k in now_.keys() | then.keys() if now_.get(k) is not then.get(k)
                } <= names
        has_names = any(not hosts.is_ip(i.host) for insts in kept.values() for i in insts)
        if answers and has_names and changed_since(mine, last) is not None:
            assert changed_since(a.services, answers[-1].services) is not None, "lineage lost"
        assert a.instance_count == b.instance_count
        assert a.fingerprint(digests) == b.fingerprint()
        now = at(n)
        assert make_plan(sp, a, now, memo=memo) == make_plan(sp, b, now, memo=plain_memo)
        answers.append(a)
        last = mine
