"""`nginxgen agent` against Consul's agent HTTP API, replayed by an in-process server.

The fake (tests/helpers/fakes.py, the one the source tests read) answers the endpoints the
way Consul's docs describe them and records every call.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from nginxgen.agent.restart import STEPS
from tests.helpers import REPO, free_port
from tests.helpers.agent import (
    Control,
    Timeline,
    eventually,
    group_members,
    port_open,
    token_file,
    unit_command,
    write_agent_spec,
)
from tests.helpers.fakes import FakeConsul
from tests.helpers.tls import make_tls_files


@pytest.fixture
def consul() -> Iterator[FakeConsul]:
    fake = FakeConsul().start()
    yield fake
    fake.stop()


PASS = "/v1/agent/check/pass/service:app-1"
FAIL = "/v1/agent/check/fail/service:app-1"


def test_consul_lifecycle(tmp_path, consul, agents, backends):
    app = backends("app")
    spec = write_agent_spec(tmp_path, {"kind": "consul", "url": consul.url})
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "3s"),
        *("--weight", "4", "--tag", "v2", "--meta", "zone=a", "--drain", "1s"),
        *("--health-url", f"http://{app.address}/healthz", "--health-interval", "0.2s"),
        env={"CONSUL_HTTP_TOKEN": "s3cret"},
    )
    eventually(lambda: consul.paths().count(PASS) >= 3, 30, "three TTL passes", agent)
    register = consul.calls[0]
    assert register["path"] == "/v1/agent/service/register"
    body = register["body"]
    assert body == {
        "ID": "app-1",
        "Name": "app",
        "Address": "127.0.0.1",
        "Port": app.port,
        "Tags": ["v2"],
        "Meta": {"zone": "a", "registered_at": body["Meta"]["registered_at"], "weight": "4"},
        "Weights": {"Passing": 4, "Warning": 1},
        "Check": {
            "CheckID": "service:app-1",
            "Name": "nginxgen agent heartbeat for app-1",
            "TTL": "3s",
            "DeregisterCriticalServiceAfter": "1m",
        },
    }
    assert body["Meta"]["registered_at"].endswith("Z")
    assert {c["token"] for c in consul.calls} == {"s3cret"}

    # Unhealthy: the TTL check is failed (Consul: critical → the gateway's `down`).
    app.health_status = 500
    eventually(lambda: consul.registered["app-1"]["check"] == "critical", 30, "fail", agent)
    assert FAIL in consul.paths()
    app.health_status = 200
    eventually(lambda: consul.registered["app-1"]["check"] == "passing", 30, "pass", agent)

    # A Consul agent that forgot us: 404 on the pass, then a fresh registration.
    consul.forget()
    eventually(lambda: "app-1" in consul.registered, 30, "re-registration", agent)
    assert consul.paths().count("/v1/agent/service/register") == 2
    agent.wait_log("registering again")

    # An outage: the agent waits it out and keeps passing afterwards.
    consul.broken = True
    agent.wait_log("registry unreachable")
    consul.broken = False
    agent.wait_log("reachable again")
    before = consul.paths().count(PASS)
    eventually(lambda: consul.paths().count(PASS) > before, 30, "passes after the outage")

    # Shutdown: maintenance mode (the readers' `draining`), then deregistration.
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    paths = consul.paths()
    maintenance = [c for c in consul.calls if "/maintenance/" in c["path"]]
    assert maintenance[0]["path"] == "/v1/agent/service/maintenance/app-1"
    assert maintenance[0]["query"]["enable"] == "true"
    assert paths[-1] == "/v1/agent/service/deregister/app-1"
    assert paths.index("/v1/agent/service/maintenance/app-1") < len(paths) - 1
    assert consul.registered == {}


def test_consul_over_tls_with_a_client_certificate(tmp_path, agents, backends):
    tls = make_tls_files(tmp_path / "pki")
    consul = FakeConsul(tls).start()
    try:
        app = backends("app")
        files = {"ca": str(tls.ca), "cert": str(tls.client_cert), "key": str(tls.client_key)}
        spec = write_agent_spec(tmp_path, {"kind": "consul", "url": consul.url, "tls": files})
        agent = agents(
            spec,
            *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "3s"),
            *("--drain", "0s"),
        )
        eventually(lambda: PASS in consul.paths(), 30, "a TTL pass over TLS", agent)
        assert consul.url.startswith("https://")
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        assert consul.registered == {}
    finally:
        consul.stop()


def test_a_token_variable_named_in_the_spec_must_be_set(tmp_path, consul):
    spec = write_agent_spec(
        tmp_path, {"kind": "consul", "url": consul.url, "token_env": "NGINXGEN_TEST_NO_TOKEN"}
    )
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "agent", "-c", str(spec)]
        + ["--service", "app", "--address", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    assert "token environment variable NGINXGEN_TEST_NO_TOKEN is not set" in result.stderr
    assert consul.calls == []


def test_consul_restart_waits_for_the_catalog_to_drop_the_unit(tmp_path, consul, agents):
    # The agent reads the catalog (what the gateway reads) to see the unit gone, not its
    # own deregistration call: Consul's catalog follows its local agent by a sync.
    port, control_port = free_port(), free_port()
    spec = write_agent_spec(tmp_path, {"kind": "consul", "url": consul.url})
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", f"127.0.0.1:{port}"),
        *("--health-url", f"http://127.0.0.1:{port}/healthz", "--health-interval", "0.1s"),
        *("--ttl", "3s", "--wait-healthy", "--restart-grace", "0s"),
        *("--control-listen", f"127.0.0.1:{control_port}"),
        *("--control-token-file", str(token_file(tmp_path)), "--"),
        *unit_command(tmp_path, port, 0.3, "consul", consul.url, "app", "app-1"),
    )
    control = Control(control_port)

    def in_catalog() -> dict[str, Any] | None:
        found = [e for e in consul.services.get("app", []) if e["Service"]["ID"] == "app-1"]
        return found[0] if found else None

    eventually(lambda: in_catalog() and consul.registered["app-1"]["check"] == "passing", 30)
    first = consul.calls[0]["body"]
    assert first["Meta"]["nginxgen_control"] == control.url
    old_pid = control.status()["pid"]

    def back(seen: dict[str, float]) -> bool:
        entry = in_catalog()
        return (
            "started" in seen and entry is not None and entry["Checks"][-1]["Status"] == "passing"
        )

    timeline = Timeline(
        {
            "deregistered": lambda seen: DEREGISTER in consul.paths(),
            "unlisted": lambda seen: "deregistered" in seen and in_catalog() is None,
            "stopped": lambda seen: (
                "unlisted" in seen and not port_open(port) and not group_members(old_pid)
            ),
            "started": lambda seen: "stopped" in seen and port_open(port),
            "registered": back,
        }
    )
    assert control.restart().status_code == 202
    timeline.wait("registered", 60, agent)
    seen = timeline.stop()
    order = ["deregistered", "unlisted", "stopped", "started", "registered"]
    assert sorted(seen, key=seen.__getitem__) == order, seen
    assert (tmp_path / "marker").read_text().split() == [str(old_pid), "absent"]

    registers = [c for c in consul.calls if c["path"] == "/v1/agent/service/register"]
    again = registers[-1]["body"]
    assert len(registers) == 2
    # registered_at has second resolution: a quick restart may land in the same second.
    assert again["Meta"]["registered_at"] >= first["Meta"]["registered_at"]
    assert {**again["Meta"], "registered_at": ""} == {**first["Meta"], "registered_at": ""}
    last = control.finished(agent=agent)["last_restart"]
    assert last["result"] == "ok"
    assert [s["step"] for s in last["steps"]] == list(STEPS)


DEREGISTER = "/v1/agent/service/deregister/app-1"
