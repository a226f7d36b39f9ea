"""The agent's pure parts: rise/fall, in-flight parsing, command-line checks (its backoff
is nginxgen.util.backoff, tested in tests/util/test_backoff.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from nginxgen.agent.base import AgentConfig, Record
from nginxgen.agent.health import HealthTracker, parse_inflight
from tests.helpers import REPO


def test_health_flips_only_after_rise_or_fall_in_a_row():
    t = HealthTracker(rise=2, fall=3, healthy=True)
    assert [t.observe(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert t.healthy is True  # the pass in between reset the streak
    assert t.observe(False) is True and t.healthy is False
    assert t.observe(True) is False
    assert t.observe(False) is False  # a failure breaks the rise streak
    assert [t.observe(True), t.observe(True)] == [False, True]
    assert t.healthy is True


def test_no_verdict_yet_needs_a_full_streak_either_way():
    t = HealthTracker(rise=2, fall=3)
    assert [t.observe(True), t.observe(True)] == [False, True]
    t = HealthTracker(rise=2, fall=3)
    assert [t.observe(False) for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize(
    ("body", "count"),
    [
        ("0", 0),
        ("3\n", 3),
        ('{"inflight": 2}', 2),
        ("{}", None),
        ("-1", None),
        ("busy", None),
        ("true", None),
        ('{"inflight": "x"}', None),
    ],
)
def test_inflight_parsing(body, count):
    assert parse_inflight(body) == count


def test_record_json_is_what_the_readers_expect():
    cfg = AgentConfig("app", "app-1", "10.0.0.1:80", weight=3, tags=("v2",), meta=(("z", "a"),))
    record = Record.first(cfg, "up", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert record.with_state("down").to_json() == {
        "id": "app-1",
        "address": "10.0.0.1:80",
        "weight": 3,
        "state": "down",
        "registered_at": "2026-01-02T03:04:05Z",
        "tags": ["v2"],
        "meta": {"z": "a"},
    }
    assert cfg.heartbeat_every == pytest.approx(10 / 3)


def agent_cli(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "nginxgen.yaml"
    if not spec.exists():
        spec.write_text(
            "registry: {kind: file, path: services.yaml}\nroutes: [{path: /, service: a}]\n"
        )
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "agent", "-c", str(spec), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--service", "a;b", "--address", "127.0.0.1:1"], "--service: 'a;b' is not a valid"),
        (["--service", "a", "--address", "127.0.0.1"], "--address: address must be 'host:port'"),
        (["--service", "a", "--address", "h:99999"], "--address: port out of range"),
        (["--service", "a", "--address", "h:1", "--id", "x/y"], "--id: must not contain '/'"),
        (["--service", "a", "--address", "h:1", "--id", "x;y"], "--id: instance id has char"),
        (["--service", "a", "--address", "h:1", "--weight", "0"], "--weight: must be 1-1000"),
        (["--service", "a", "--address", "h:1", "--ttl", "soon"], "--ttl: not a duration"),
        (["--service", "a", "--address", "h:1", "--ttl", "500ms"], "--ttl: registries count"),
        (["--service", "a", "--address", "h:1", "--meta", "novalue"], "--meta: expected key=v"),
        (["--service", "a", "--address", "h:1", "--meta", "state=up"], "written by the agent"),
        (["--service", "a", "--address", "h:1", "--wait-healthy"], "--wait-healthy needs"),
        (["--service", "a", "--address", "h:1", "--health-url", "x"], "--health-url: must be"),
        (["--service", "a", "--address", "h:1", "--", "/no/such/program"], "cannot run"),
    ],
)
def test_bad_command_line_is_one_sentence_and_exit_2(tmp_path, args, message):
    result = agent_cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_registry_settings_are_a_spec_error(tmp_path):
    (tmp_path / "nginxgen.yaml").write_text(
        "registry: {kind: etcd, url: 'http://127.0.0.1:1', prefix: services}\n"
        "routes: [{path: /, service: a}]\n"
    )
    result = agent_cli(tmp_path, "--service", "a", "--address", "h:1")
    assert result.returncode == 2
    assert "registry: prefix must end with '/'" in result.stderr


def test_network_registry_models(tmp_path):
    from nginxgen.spec import SpecError, parse_spec

    routes = "routes: [{path: /, service: a}]\n"
    spec = parse_spec(
        "registry: {kind: etcd, endpoints: ['http://10.0.0.1:2379/', 'http://10.0.0.2:2379']}\n"
        + routes,
        tmp_path / "s.yaml",
    )
    assert spec.registry.kind == "etcd"
    assert spec.registry.all_endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert spec.registry.prefix == "/services/"
    spec = parse_spec("registry: {kind: consul}\n" + routes, tmp_path / "s.yaml")
    assert spec.registry.kind == "consul"
    assert (spec.registry.url, spec.registry.token_env) == (
        "http://127.0.0.1:8500",
        "CONSUL_HTTP_TOKEN",
    )
    with pytest.raises(SpecError, match=r"s\.yaml:1: registry: use url or endpoints, not both"):
        parse_spec(
            "registry: {kind: etcd, url: 'http://a:1', endpoints: ['http://b:1']}\n" + routes,
            tmp_path / "s.yaml",
        )
    with pytest.raises(SpecError, match=r"registry\.url: must be an http:// or https:// URL"):
        parse_spec("registry: {kind: consul, url: 'ftp://x'}\n" + routes, tmp_path / "s.yaml")
