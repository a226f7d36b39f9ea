"""plan/endpoints.py: the endpoint sets a dynamic Plan pushes, and Plan.structure."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.pipeline import BuildCache, build
from nginxgen.plan import PlanMemo, make_plan
from nginxgen.plan.endpoints import (
    changed_endpoints,
    endpoint_set,
    hash_variable,
    lua_balance,
    plan_document,
    split_address,
)
from nginxgen.spec import Spec

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def spec(tmp: Path, **services: dict) -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {"output": str(tmp / "nginx.conf")},
            "services": services,
            "routes": [
                {"path": "/a/", "service": "a"},
                {"path": "/b/", "service": "b"},
                {"path": "/gone/", "service": "gone"},
            ],
        },
        context={"base_dir": str(tmp)},
    )


def catalog(*a: Instance, b: tuple[Instance, ...] = ()) -> Catalog:
    return Catalog({"a": tuple(a), "b": b or (Instance("b1", "b", "10.0.0.9", 80),)})


def test_every_http_service_is_a_dynamic_upstream_and_every_route_proxies(tmp_path) -> None:
    plan = make_plan(spec(tmp_path), catalog(Instance("a1", "a", "10.0.0.1", 8080, 3)), NOW)
    assert [u.name for u in plan.upstreams] == ["a", "b", "gone"]
    assert all(u.dynamic and u.zone is None for u in plan.upstreams)
    assert [loc.upstream for loc in plan.locations] == ["a", "b", "gone"]
    assert endpoint_set(plan.upstreams[0]) == {
        "peers": [
            {"host": "10.0.0.1", "port": 8080, "weight": 3, "max_fails": 3, "fail_timeout": 10}
        ]
    }
    assert endpoint_set(plan.upstreams[2]) == {"peers": []}  # nobody: Lua answers 503
    doc = plan_document(plan)
    assert doc["generation"] == 0 and set(doc["upstreams"]) == {"a", "b", "gone"}


def test_drain_down_and_pseudo_dead_leave_the_set_backup_and_hash_down_stay(tmp_path) -> None:
    s = spec(tmp_path, b={"balance": "hash $request_uri consistent"})
    a = (
        Instance("a1", "a", "10.0.0.1", 80),
        Instance("a2", "a", "10.0.0.2", 80, state="draining"),
        Instance("a3", "a", "fd00::7", 80, tags=("backup",)),
    )
    b = (Instance("b1", "b", "10.0.0.8", 80), Instance("b2", "b", "10.0.0.9", 80, state="down"))
    plan = make_plan(s, catalog(*a, b=b), NOW)
    ups = {u.name: u for u in plan.upstreams}
    peers = endpoint_set(ups["a"])["peers"]
    assert [(p["host"], p.get("backup")) for p in peers] == [("10.0.0.1", None), ("fd00::7", True)]
    assert lua_balance(ups["b"]) == "consistent_hash"
    assert ups["b"].hash_var == hash_variable("b")
    assert [p.get("state") for p in endpoint_set(ups["b"])["peers"]] == [None, "down"]


def test_warm_up_steps_are_weights_and_only_changed_services_are_pushed(tmp_path) -> None:
    s = spec(tmp_path, a={"warmup": {"step_percent": 10, "period": "10s"}})
    memo = PlanMemo()
    old = Instance("a1", "a", "10.0.0.1", 80, registered_at=NOW - timedelta(hours=1))
    new = Instance("a2", "a", "10.0.0.2", 80, registered_at=NOW)
    first = make_plan(s, catalog(old, new), NOW, memo=memo)
    later = make_plan(s, catalog(old, new), NOW + timedelta(seconds=35), memo=memo)
    weights = [[p["weight"] for p in endpoint_set(p.upstreams[0])["peers"]] for p in (first, later)]
    assert weights[0][1] < weights[1][1] < weights[1][0], weights
    assert first.structure == later.structure, "a warm-up step needs no reload"
    delta = changed_endpoints(first, later)
    assert list(delta) == ["a"], "b did not change"
    assert changed_endpoints(later, later) == {}
    assert set(changed_endpoints(None, later)) == {"a", "b", "gone"}
    # Side by side when the upstreams line up; by name when they do not.
    moved = replace(later, upstreams=later.upstreams[::-1])
    assert list(changed_endpoints(first, moved)) == ["a"]
    fewer = replace(later, upstreams=later.upstreams[:2])
    assert list(changed_endpoints(fewer, later)) == ["gone"]


def test_structure_changes_with_routes_and_policies_not_with_endpoints(tmp_path) -> None:
    one = make_plan(spec(tmp_path), catalog(Instance("a1", "a", "10.0.0.1", 80)), NOW)
    two = make_plan(spec(tmp_path), catalog(Instance("a9", "a", "10.0.0.9", 81, 5)), NOW)
    assert one.structure == two.structure
    other = make_plan(spec(tmp_path, a={"keepalive": 8}), catalog(), NOW)
    assert other.structure != one.structure


def test_reload_mode_is_todays_plan(tmp_path) -> None:
    s = Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {"endpoints": "reload"},
            "routes": [{"path": "/", "service": "a"}, {"path": "/g/", "service": "gone"}],
        }
    )
    plan = make_plan(s, catalog(Instance("a1", "a", "10.0.0.1", 80)), NOW)
    assert [u.name for u in plan.upstreams] == ["a"] and not plan.upstreams[0].dynamic
    assert plan.feed is None and plan.locations[1].upstream is None


def test_defaults_follow_lua_and_the_status_listener() -> None:
    base = {
        "registry": {"kind": "file", "path": "/dev/null"},
        "routes": [{"path": "/", "service": "a"}],
    }
    assert Spec.model_validate(base).nginx.endpoints == "dynamic"
    off = Spec.model_validate({**base, "nginx": {"status_listen": "off"}})
    assert off.nginx.endpoints == "reload"
    assert Spec.model_validate({**base, "nginx": {"metrics": False}}).nginx.endpoints == "reload"
    with pytest.raises(ValueError, match="status listener"):
        Spec.model_validate(
            {**base, "nginx": {"status_listen": "off", "metrics": False, "endpoints": "dynamic"}}
        )


def test_addresses() -> None:
    assert split_address("10.0.0.1:80") == ("10.0.0.1", 80)
    assert split_address("[FD00:0::7]:8080") == ("fd00::7", 8080)
    assert split_address("db.internal:5432") is None  # names: Lua takes literals only
    assert split_address("0.0.0.0:80") is None


@pytest.mark.requires("nginx-lua")
@pytest.mark.parametrize(
    "balance",
    [
        "round_robin",
        "least_conn",
        "random",
        "ip_hash",
        "hash $request_uri",
        "hash $arg_k consistent",
    ],
)
def test_dynamic_render_verifies_and_passes_nginx_t(tmp_path, balance) -> None:
    from nginxgen.deploy.nginx_bin import find_binary

    s = spec(tmp_path, a={"balance": balance})
    binary = find_binary(s.nginx)
    result = build(
        s, catalog(Instance("a1", "a", "10.0.0.1", 80)), binary=binary, cache=BuildCache()
    )
    assert result.verdict.ok, result.verdict.findings
    assert result.verdict.nginx_tested
    text = result.text
    assert "server 0.0.0.1;" in text and "10.0.0.1:80" not in text.split("init_by_lua")[1]
    token = (tmp_path / "nginxgen-endpoints.token").read_text().strip()
    assert token not in text and (tmp_path / "nginxgen-endpoints.token").stat().st_mode & 0o077 == 0


def test_a_tampered_dynamic_upstream_is_refused(tmp_path) -> None:
    from nginxgen.verify import verify

    s = spec(tmp_path)
    result = build(s, catalog(Instance("a1", "a", "10.0.0.1", 80)), binary=None, cache=BuildCache())
    assert result.verdict.ok
    bad = result.text.replace("server 0.0.0.1;", "server 10.6.6.6;", 1)
    assert any("has servers" in str(f) for f in verify(bad, result.plan).findings)
    bad = result.text.replace('balance("a")', 'balance("b")', 1)
    assert not verify(bad, result.plan).ok
    # The 503 while nobody serves: the route's pair and the server's named location.
    for was, tampered in (
        ("set $nginxgen_service a;", "set $nginxgen_service b;"),
        ("error_page 500 = @nginxgen_503;", ""),
        ("error_page 500 = @nginxgen_503;", "error_page 500 = @nginxgen_405;"),
        ('balancer").unavailable() }', 'balancer").available("a") }'),
        ("location @nginxgen_503 {", "location @nginxgen_504 {"),
    ):
        assert was in result.text, was
        bad = result.text.replace(was, tampered, 1)
        assert not verify(bad, result.plan).ok, tampered
