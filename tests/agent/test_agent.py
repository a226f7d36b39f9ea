"""The agent's pure parts: rise/fall, in-flight parsing, command-line checks (its backoff
is nginxgen.util.backoff, tested in tests/util/test_backoff.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

from nginxgen.agent.base import AgentConfig, HealthCheck, Record
from nginxgen.agent.cli_args import AgentArgsError, agent_config
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
        (["--service", "a", "--address", "h:1", "--health-kind", "udp"], "--health-kind: must"),
        (
            ["--service", "a", "--address", "h:1", "--control-listen", "127.0.0.1:1"]
            + ["--control-token-file", "/no/such/token", "--", "true"],
            "--control-token-file /no/such/token: no such file",
        ),
    ],
)
def test_bad_command_line_is_one_sentence_and_exit_2(tmp_path, args, message):
    result = agent_cli(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def config(**given: Any) -> AgentConfig:
    """agent_config with the command line's defaults for what `given` leaves out."""
    args: dict[str, Any] = {
        "service": "a",
        "address": "127.0.0.1:8080",
        "instance_id": None,
        "weight": 1,
        "meta": [],
        "tags": [],
        "ttl": "10s",
        "health_url": None,
        "health_interval": "2s",
        "rise": 2,
        "fall": 3,
        "wait_healthy": False,
        "drain": "15s",
        "drain_min": "2s",
        "inflight_url": None,
        "stop_timeout": "30s",
        "command": [],
    }
    return agent_config(**(args | given))


CONTROL = {"control_listen": "127.0.0.1:9901", "control_token_file": "t", "command": ["true"]}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"health_kind": "https", "health_url": "http://h:1/"},
            "--health-url must start with https://",
        ),
        ({"health_kind": "tcp", "health_url": "http://h:1/"}, "tcp checks a connect, not a URL"),
        ({"health_kind": "http"}, "--health-kind http needs --health-url"),
        ({"health_ca": "ca.pem"}, "--health-ca needs an https:// --health-url"),
        ({"health_insecure": True}, "--health-insecure needs an https:// --health-url"),
        ({"health_url": "http://h:1/", "health_sni": "x"}, "are for https, not http"),
        ({"health_url": "https://h:1/", "health_ca": "/no/ca"}, "--health-ca /no/ca: not a read"),
        (
            {"health_url": "https://h:1/", "health_ca": "c", "health_insecure": True},
            "--health-ca and --health-insecure contradict each other",
        ),
        ({"health_url": "https://h:1/", "health_sni": "10.0.0.1"}, "must be a DNS name"),
        ({"health_url": "https://h:1/", "health_sni": "a b"}, "--health-sni: not an IP"),
        ({"health_address": "nohost"}, "--health-address: address must be 'host:port'"),
        ({"health_url": "http://h:1/", "health_address": "h:2"}, "is for --health-kind tcp"),
        ({"wait_healthy": True}, "--wait-healthy needs a health check"),
        ({"control_listen": "127.0.0.1:9"}, "--control-listen needs --control-token-file"),
        ({"control_token_file": "t"}, "--control-token-file needs --control-listen"),
        ({"restart_grace": "1s"}, "--restart-grace needs --control-listen"),
        ({"restart_limit": "1/1m"}, "--restart-limit needs --control-listen"),
        ({"control_advertise": "http://h:1"}, "--control-advertise needs --control-listen"),
        (CONTROL | {"command": []}, "--control-listen needs a program to restart"),
        (CONTROL | {"control_listen": "0.0.0.0:9901"}, "listens on every address: say where"),
        (CONTROL | {"control_listen": "[::]:9901"}, "--control-advertise URL"),
        (CONTROL | {"control_listen": "127.0.0.1"}, "--control-listen: address must be"),
        (CONTROL | {"control_advertise": "ftp://x"}, "--control-advertise: must be an http"),
        (CONTROL | {"restart_limit": "3"}, "--restart-limit: expected COUNT/WINDOW like 3/10m"),
        (CONTROL | {"restart_limit": "0/10m"}, "--restart-limit: expected COUNT/WINDOW"),
        (CONTROL | {"restart_limit": "3/soon"}, "--restart-limit: not a duration"),
        (CONTROL | {"restart_grace": "-1s"}, "--restart-grace: "),
        ({"start_timeout": "1m"}, "--start-timeout needs --control-listen"),
        (CONTROL | {"start_timeout": "0s"}, "--start-timeout: must be more than 0"),
        ({"meta": ["nginxgen_control=http://x"]}, "written by the agent itself"),
    ],
)
def test_bad_health_and_control_options(given, message):
    with pytest.raises(AgentArgsError) as caught:
        config(**given)
    assert message in str(caught.value)


def test_health_kinds_from_the_options(tmp_path):
    assert config().health is None
    assert config(health_url="http://h:1/hz").health == HealthCheck("http", url="http://h:1/hz")
    https = config(health_url="https://h:1/hz", health_sni="Unit.Example", health_insecure=True)
    assert https.health == HealthCheck(
        "https", url="https://h:1/hz", insecure=True, sni="unit.example"
    )
    tcp = config(health_kind="tcp")
    assert tcp.health == HealthCheck("tcp", host="127.0.0.1", port=8080)
    assert tcp.health.label == "tcp 127.0.0.1:8080"
    assert config(health_address="[::1]:5432").health == HealthCheck("tcp", host="::1", port=5432)
    assert config(health_address="[::1]:5432").health.label == "tcp [::1]:5432"


def test_the_control_endpoint_is_advertised_in_meta():
    cfg = config(**CONTROL, meta=["zone=a"])
    assert cfg.control is not None
    assert (cfg.control.grace, cfg.control.limit, cfg.control.window) == (3.0, 3, 600.0)
    assert cfg.control.start_timeout == 60.0
    assert cfg.meta == (("nginxgen_control", "http://127.0.0.1:9901"), ("zone", "a"))
    v6 = config(**CONTROL | {"control_listen": "[::1]:9901"})
    assert dict(v6.meta)["nginxgen_control"] == "http://[::1]:9901"
    anywhere = config(
        **CONTROL | {"control_listen": "0.0.0.0:9901"},
        control_advertise="https://agents.example/app-1/",
        restart_grace="500ms",
        restart_limit="5/1h",
        start_timeout="5m",
    )
    assert dict(anywhere.meta)["nginxgen_control"] == "https://agents.example/app-1"
    assert anywhere.control is not None
    assert (anywhere.control.host, anywhere.control.port) == ("0.0.0.0", 9901)
    assert (anywhere.control.grace, anywhere.control.limit) == (0.5, 5)
    assert (anywhere.control.window, anywhere.control.start_timeout) == (3600.0, 300.0)


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
