"""Gateway policies without running traffic: spec errors, zone sharing, verification."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nginxgen.model.catalog import Catalog
from nginxgen.pipeline import BuildCache, build
from nginxgen.plan import make_plan
from nginxgen.plan.gateway import plan_gateway
from nginxgen.render import render
from nginxgen.spec import SpecError, load_spec
from nginxgen.verify import verify
from tests.helpers import require_component

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "nginxgen.yaml"


def spec_file(tmp_path: Path, routes: list[dict[str, Any]], **nginx: Any) -> Path:
    (tmp_path / "services.yaml").write_text("services: {}\n")
    data = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": {"flavor": "nginx", **nginx},
        "routes": routes,
    }
    path = tmp_path / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_error(tmp_path: Path, routes: list[dict[str, Any]], **nginx: Any) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(tmp_path, routes, **nginx))
    return str(info.value)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"rate_limit": {"rate": "100/s"}}, "routes[0].rate_limit.rate: rate must look like"),
        ({"rate_limit": {"rate": "5r/h"}}, "rate must look like 100r/s or 600r/m"),
        ({"rate_limit": {"rate": "1r/s", "key": "header:X_Tenant"}}, "key must be client_ip"),
        ({"rate_limit": {"rate": "1r/s", "key": "api_key"}}, "needs auth.api_keys"),
        ({"rate_limit": {"rate": "1r/s", "zone_size": "lots"}}, "zone_size must look like"),
        ({"limit_conn": 0}, "routes[0].limit_conn"),
        ({"auth": {}}, "set exactly one of api_keys or url"),
        ({"auth": {"url": "http://a/v", "api_keys": {"file": "k"}}}, "exactly one of"),
        ({"auth": {"url": "http://a/$x"}}, "url must be http(s)://host"),
        ({"auth": {"url": "http://a/v", "forward_headers": ["X User"]}}, "not an HTTP header"),
        ({"auth": {"api_keys": {"file": "nope.txt"}}}, "cannot read the API keys file"),
    ],
)
def test_bad_gateway_settings_are_named(tmp_path, route, expected):
    (tmp_path / "k").write_text("a-key-1234\n")
    message = spec_error(tmp_path, [{"path": "/a/", "service": "a", **route}])
    assert expected in message, message
    assert "nginxgen.yaml:" in message
    assert len(message.splitlines()) == 1, message  # one problem, one line


def test_keys_file_errors_name_the_line_never_the_key(tmp_path):
    (tmp_path / "keys.txt").write_text("good-key-1\nbad key with spaces\n")
    message = spec_error(
        tmp_path, [{"path": "/a/", "service": "a", "auth": {"api_keys": {"file": "keys.txt"}}}]
    )
    assert "keys.txt:2: a key must be printable ASCII without spaces" in message
    assert "bad key" not in message and "good-key-1" not in message
    (tmp_path / "keys.txt").write_text("# nothing here\n")
    message = spec_error(
        tmp_path, [{"path": "/a/", "service": "a", "auth": {"api_keys": {"file": "keys.txt"}}}]
    )
    assert "holds no keys" in message


def test_status_listen_must_be_loopback(tmp_path):
    message = spec_error(tmp_path, [{"path": "/", "service": "a"}], status_listen="0.0.0.0:9145")
    assert "nginx.status_listen: must be a loopback address:port" in message
    message = spec_error(
        tmp_path, [{"path": "/", "service": "a"}], listen=8080, status_listen="127.0.0.1:8080"
    )
    assert "status_listen must use another port than listen" in message
    ok = load_spec(spec_file(tmp_path, [{"path": "/", "service": "a"}], status_listen="[::1]:9"))
    assert ok.nginx.status_listen == "[::1]:9"


def test_spec_errors_exit_2_from_the_cli(tmp_path):
    path = spec_file(tmp_path, [{"path": "/a/", "service": "a", "rate_limit": {"rate": "fast"}}])
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "rate must look like" in result.stderr
    assert "Traceback" not in result.stderr


def test_routes_with_the_same_key_and_rate_share_one_zone(tmp_path):
    (tmp_path / "keys.txt").write_text("k-1234567890\n")
    spec = load_spec(
        spec_file(
            tmp_path,
            [
                {"path": "/a/", "service": "a", "rate_limit": {"rate": "10r/s"}},
                {"path": "/b/", "service": "a", "rate_limit": {"rate": "10r/s", "burst": 5}},
                {"path": "/c/", "service": "a", "rate_limit": {"rate": "20r/s"}},
                {
                    "path": "/d/",
                    "service": "a",
                    "rate_limit": {"rate": "10r/s", "key": "header:X-Tenant", "zone_size": "32m"},
                },
                {
                    "path": "/e/",
                    "service": "a",
                    "auth": {"api_keys": {"file": "keys.txt", "header": "X-Key"}},
                    "rate_limit": {"rate": "10r/s", "key": "api_key"},
                },
            ],
        )
    )
    gw, guards = plan_gateway(spec)
    assert [(z.key, z.rate, z.size) for z in gw.zones] == [
        ("$binary_remote_addr", "10r/s", "10m"),
        ("$binary_remote_addr", "20r/s", "10m"),
        ("$http_x_tenant", "10r/s", "32m"),
        ("$http_x_key", "10r/s", "10m"),
    ]
    assert guards[0].limit_zone == guards[1].limit_zone != guards[2].limit_zone
    assert [g.retry_after for g in guards] == [1, 1, 1, 1, 1]


def test_defaults_apply_to_every_route_and_off_opts_out(tmp_path):
    path = spec_file(
        tmp_path,
        [
            {"path": "/a/", "service": "a"},
            {"path": "/b/", "service": "a", "rate_limit": "off"},
            {"path": "/c/", "service": "a", "rate_limit": {"burst": 9}},
        ],
    )
    data = yaml.safe_load(path.read_text())
    data["defaults"] = {"rate_limit": {"rate": "6r/m", "burst": 3}, "limit_conn": 4}
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    limits = [r.rate_limit for r in spec.routes]
    assert limits[0] is not None and (limits[0].rate, limits[0].burst) == ("6r/m", 3)
    assert limits[1] is None
    assert limits[2] is not None and (limits[2].rate, limits[2].burst) == ("6r/m", 9)
    assert [r.limit_conn for r in spec.routes] == [4, 4, 4]
    _, guards = plan_gateway(spec)
    assert guards[0].retry_after == 10  # 6 per minute: one every 10 s


def test_rendered_config_holds_digests_not_keys(tmp_path):
    (tmp_path / "keys.txt").write_text("# team a\nsecret-one-123\nsha256:" + "ab" * 32 + "\n")
    spec = load_spec(
        spec_file(
            tmp_path, [{"path": "/a/", "service": "a", "auth": {"api_keys": {"file": "keys.txt"}}}]
        )
    )
    text = render(make_plan(spec, Catalog(services={})), spec.nginx)
    assert "secret-one-123" not in text
    assert hashlib.sha256(b"secret-one-123").hexdigest() in text
    assert "ab" * 32 in text


def test_verification_catches_a_route_that_lost_its_guard(tmp_path):
    (tmp_path / "keys.txt").write_text("k-1234567890\n")
    spec = load_spec(
        spec_file(
            tmp_path,
            [
                {"path": "/a/", "service": "a", "auth": {"url": "http://127.0.0.1:9/v"}},
                {"path": "/b/", "service": "a", "rate_limit": {"rate": "1r/s"}},
                {"path": "/c/", "service": "a", "auth": {"api_keys": {"file": "keys.txt"}}},
            ],
            status_listen="127.0.0.1:9145",
        )
    )
    plan = make_plan(spec, Catalog(services={}))
    text = render(plan, spec.nginx)
    assert verify(text, plan).ok, verify(text, plan).findings
    for directive, what in (
        ("auth_request /", "auth_request"),
        ("limit_req zone", "limit_req"),
        ("set_by_lua_block", "API key check"),
    ):
        broken = "\n".join(line for line in text.splitlines() if directive not in line)
        findings = [str(f) for f in verify(broken, plan).findings]
        assert any(f"lacks its planned {what}" in f for f in findings), findings
    without_status = text.replace("listen 127.0.0.1:9145;", "listen 127.0.0.1:9146;")
    assert any("status server" in str(f) for f in verify(without_status, plan).findings)


@pytest.mark.requires("nginx")
def test_bundled_example_passes_crossplane_and_nginx_t(tmp_path):
    from nginxgen.pipeline import nginx_for_test
    from nginxgen.sources import open_source

    spec = load_spec(EXAMPLE)
    source = open_source(spec.registry, spec.service_names)
    result = build(spec, source.read(), binary=nginx_for_test(spec, True), cache=BuildCache())
    assert result.verdict.ok, result.verdict.findings
    assert result.verdict.nginx_tested
    text = result.text
    for needle in ("limit_req zone=", "auth_request /_nginxgen/auth/0", "stub_status", "/metrics"):
        assert needle in text


def test_gixy_finds_nothing_high_in_the_bundled_example(tmp_path):
    gixy = require_component("gixy")  # in the venv's bin dir, not necessarily on PATH
    conf = tmp_path / "nginx.conf"
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(EXAMPLE), "-o", str(conf)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    out = subprocess.run([gixy, "-f", "json", str(conf)], capture_output=True, text=True)
    findings = json.loads(out.stdout)
    high = [f for f in findings if f["severity"] == "HIGH"]
    assert not high, high
