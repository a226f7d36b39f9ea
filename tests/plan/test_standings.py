"""Where the plan places each registry instance (Plan.standings, for `nginxgen status`):
state, planned weight, warm-up percent and reason; and that carrying it leaves the
rendered config as it was."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from nginxgen.model.observed import Observed
from nginxgen.model.plan import Standing
from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import BuildCache, build, lua_modules
from nginxgen.plan import make_plan
from nginxgen.render.conf import render
from nginxgen.spec import parse_spec

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
OLD = T0 - timedelta(days=1)

SPEC = """\
registry: {kind: file, path: s.yaml}
nginx: {flavor: nginx}
defaults: {warmup: {step_percent: 10, period: 30s}}
services: {%s}
routes: [{path: /, service: app}]
"""


def spec(services: str = ""):
    return parse_spec(SPEC % services, Path("/tmp/nginxgen.yaml"))


def catalog(*instances: dict):
    b = CatalogBuilder("t")
    for fields in instances:
        b.add("app", **fields)
    return b.build()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_every_instance_has_a_place_with_state_weight_and_reason() -> None:
    cat = catalog(
        {"id": "a", "address": "10.0.0.1:80", "registered_at": OLD},
        {"id": "new", "address": "10.0.0.2:80", "registered_at": T0},
        {"id": "d", "address": "10.0.0.3:80", "registered_at": OLD, "state": "draining"},
        {"id": "s", "address": "10.0.0.4:80", "state": "starting"},
        {"id": "sick", "address": "10.0.0.5:80", "registered_at": OLD},
        {"id": "twin", "address": "10.0.0.1:80", "registered_at": OLD},
        {"id": "b", "address": "10.0.0.6:80", "registered_at": OLD, "tags": ["backup"]},
    )
    dead = Observed(dead=frozenset({"app/sick@10.0.0.5:80"}))
    plan = make_plan(spec(), cat, at(31), dead)
    assert sorted(plan.standings["app"]) == sorted(
        [
            Standing("a", "10.0.0.1:80", "serving", 10),
            Standing("new", "10.0.0.2:80", "warming", 2, 20, "warm-up step 2 of 10"),
            Standing("d", "10.0.0.3:80", "draining", 0, None, "registry: draining"),
            Standing("s", "10.0.0.4:80", "out", 0, None, "registry: starting"),
            Standing("sick", "10.0.0.5:80", "pseudo_dead", 0, None, "fails its health probe"),
            Standing("twin", "10.0.0.1:80", "out", 0, None, "same address as instance a"),
            Standing("b", "10.0.0.6:80", "serving", 10, None, "backup"),
        ]
    )
    # The planned weight is the server line's.
    (up,) = plan.upstreams
    weights = {s.instance_id: s.weight for s in up.servers}
    assert weights == {p.id: p.weight for p in plan.standings["app"] if p.weight}


def test_a_service_failing_everywhere_is_kept_in_and_says_so() -> None:
    cat = catalog({"id": "a", "address": "10.0.0.1:80"}, {"id": "b", "address": "10.0.0.2:80"})
    dead = Observed(dead=frozenset({"app/a@10.0.0.1:80", "app/b@10.0.0.2:80"}))
    (a, b) = make_plan(spec(), cat, at(0), dead).standings["app"]
    assert (a.state, a.weight, b.state, b.weight) == ("pseudo_dead", 1, "pseudo_dead", 1)
    assert "kept in" in a.reason


def test_nobody_to_serve_still_lists_the_instances() -> None:
    cat = catalog({"id": "a", "address": "10.0.0.1:80", "state": "draining"})
    plan = make_plan(spec(), cat, at(0))
    assert not any(u.servers for u in plan.upstreams)  # (dynamic mode keeps an empty one)
    assert plan.standings["app"] == (
        Standing("a", "10.0.0.1:80", "draining", 0, None, "registry: draining"),
    )


def test_hash_keeps_a_draining_instance_down_and_it_stands_at_zero() -> None:
    cat = catalog(
        {"id": "a", "address": "10.0.0.1:80"},
        {"id": "d", "address": "10.0.0.2:80", "state": "draining"},
    )
    plan = make_plan(spec("app: {balance: 'hash $request_uri'}"), cat, at(0))
    (up,) = plan.upstreams
    assert [s.down for s in up.servers] == [False, True]
    assert [(p.state, p.weight) for p in plan.standings["app"]] == [("serving", 1), ("draining", 0)]


def test_standings_are_memoised_with_their_service_and_leave_the_config_alone() -> None:
    s = spec()
    cat = catalog(
        {"id": "a", "address": "10.0.0.1:80", "registered_at": OLD},
        {"id": "new", "address": "10.0.0.2:80", "registered_at": T0},
    )
    cache = BuildCache()
    first = build(s, cat, binary=None, cache=cache, now=at(1))
    again = build(s, cat, binary=None, cache=cache, now=at(2))  # same step: reused
    assert again.plan.standings["app"] is first.plan.standings["app"]
    # The text (generation included) is exactly what the plan without standings renders.
    modules = lua_modules(s.nginx, cache.versions)
    bare = render(replace(first.plan, standings={}), s.nginx, modules=modules)
    assert first.verdict.ok and bare == first.text
