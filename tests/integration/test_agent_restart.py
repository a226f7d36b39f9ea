"""The agent's control endpoint against a real etcd: a restart in the seed's order, the
refusals that change nothing, the rate limit, and a registry that is down."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import Etcd, free_port
from tests.helpers.agent import (
    TOKEN,
    AgentProcess,
    Control,
    Timeline,
    eventually,
    group_members,
    port_open,
    token_file,
    unit_command,
    write_agent_spec,
)

KEY = "/services/app/app-1"
GRACE = 1.0


@pytest.fixture
def spec(tmp_path: Path, etcd_server: Etcd) -> Path:
    return write_agent_spec(tmp_path, {"kind": "etcd", "url": etcd_server.url})


def start_unit(
    tmp_path: Path,
    spec: Path,
    agents,
    etcd: Etcd,
    *extra: str,
    ready_after: float = 0.5,
    grace: float = GRACE,
) -> tuple[AgentProcess, Control, int]:
    """An agent wrapping UNIT, with its control endpoint; returns (agent, control, port)."""
    port, control_port = free_port(), free_port()
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", f"127.0.0.1:{port}"),
        *("--health-url", f"http://127.0.0.1:{port}/healthz", "--health-interval", "0.1s"),
        *("--ttl", "3s", "--wait-healthy", "--drain", "2s", "--stop-timeout", "5s"),
        *("--control-listen", f"127.0.0.1:{control_port}"),
        *("--control-token-file", str(token_file(tmp_path))),
        *("--restart-grace", f"{grace:g}s", *extra, "--"),
        *unit_command(tmp_path, port, ready_after, "etcd", etcd.url, KEY),
    )
    eventually(lambda: etcd.get(KEY)[0], 30, "the registration", agent)
    return agent, Control(control_port), port


def test_restart_goes_in_the_seeds_order(tmp_path, spec, etcd_server, agents):
    agent, control, port = start_unit(tmp_path, spec, agents, etcd_server)
    first, lease = etcd_server.get(KEY)
    assert first is not None
    # The registration says where the gateway reaches the agent.
    assert first["meta"] == {"nginxgen_control": control.url}
    before = control.status()
    assert before["state"] == "up" and before["registered"] is True
    assert before["restarts"] == 0 and before["last_restart"] is None
    old_pid = before["pid"]
    assert group_members(old_pid)  # the program leads its own process group

    def listed() -> bool:
        return etcd_server.get(KEY)[0] is not None

    def back(seen: dict[str, float]) -> bool:
        value = etcd_server.get(KEY)[0]
        return "started" in seen and value is not None and value != first

    timeline = Timeline(
        {
            "unlisted": lambda seen: not listed(),
            "stopped": lambda seen: (
                "unlisted" in seen and not port_open(port) and not group_members(old_pid)
            ),
            "started": lambda seen: "stopped" in seen and port_open(port),
            "registered": back,
        }
    )
    answer = control.restart()
    assert answer.status_code == 202, answer.text
    restart_id = answer.json()["restart"]
    # One restart at a time.
    again = control.restart()
    assert again.status_code == 409 and again.json()["restart"] == restart_id
    timeline.wait("registered", 60, agent)
    seen = timeline.stop()

    # In order, as seen from outside: gone from etcd, then (after the grace) the program
    # stopped with its whole process group, then started, then registered again.
    assert seen["unlisted"] < seen["stopped"] < seen["started"] < seen["registered"], seen
    assert seen["stopped"] - seen["unlisted"] >= GRACE - 0.1, seen
    # Registered only once healthy: /healthz answers 503 for 0.5 s after the start.
    assert seen["registered"] - seen["started"] >= 0.4, seen

    # The program, told to stop, no longer found itself in the registry.
    assert (tmp_path / "marker").read_text().split() == [str(old_pid), "absent"]

    # A fresh registration: new lease, new start time (so the gateway ramps it from step
    # one), and the same identity and advertisement.
    value, new_lease = etcd_server.get(KEY)
    assert value is not None and new_lease != lease and etcd_server.lease_ttl(new_lease) > 0
    assert {**value, "registered_at": None} == {**first, "registered_at": None}
    assert _time(value["registered_at"]) > _time(first["registered_at"])

    # /status tells the same story, with the agent's own times.
    status = control.finished(agent=agent)
    last = status["last_restart"]
    assert (last["id"], last["result"], last["reason"]) == (restart_id, "ok", "")
    steps = [s["step"] for s in last["steps"]]
    assert steps == [
        "deregistered",
        "unlisted",
        "grace_over",
        "stopped",
        "started",
        "healthy",
        "registered",
    ]
    after = {s["step"]: s["after_seconds"] for s in last["steps"]}
    assert list(after.values()) == sorted(after.values())
    assert round(after["grace_over"] - after["unlisted"], 3) >= GRACE
    assert status["restarts"] == 1 and status["state"] == "up"
    assert status["pid"] != old_pid and status["registered_at"] == value["registered_at"]
    assert status["limit"]["used"] == 1 and status["limit"]["limited"] is False
    assert not group_members(old_pid)
    log = agent.log()
    assert f"restart {restart_id} done" in log
    assert TOKEN not in log

    # And the agent still drains and stops as before.
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    assert etcd_server.get(KEY) == (None, 0)


def test_refusals_change_nothing(tmp_path, spec, etcd_server, agents):
    agent, control, port = start_unit(tmp_path, spec, agents, etcd_server)
    value, lease = etcd_server.get(KEY)
    pid = control.status()["pid"]
    refused = [
        (control.call("POST", "/restart", token=None), 401),
        (control.call("POST", "/restart", token="x" * len(TOKEN)), 401),
        (control.call("POST", "/restart", token=TOKEN[:-1]), 401),
        (control.call("POST", "/restart", token=None, Authorization=f"Basic {TOKEN}"), 401),
        (control.call("GET", "/status", token="wrong-token-wrong-token"), 401),
        (control.call("POST", "/reboot"), 404),
        (control.call("POST", "/restart/"), 404),
        (control.call("GET", "/restart"), 405),
        (control.call("DELETE", "/restart"), 405),
        (control.call("POST", "/status"), 405),
    ]
    for answer, code in refused:
        assert answer.status_code == code, (answer.request.method, answer.request.url)
    assert refused[0][0].headers["WWW-Authenticate"].startswith("Bearer")
    assert refused[7][0].headers["Allow"] == "POST"
    status = control.status()
    assert status["restart"] is None and status["last_restart"] is None
    assert status["limit"]["used"] == 0 and status["pid"] == pid
    assert etcd_server.get(KEY) == (value, lease)
    assert port_open(port) and group_members(pid)
    log = agent.log()
    assert "401 (no bearer token)" in log and "401 (wrong token)" in log
    assert TOKEN not in log and TOKEN[:-1] not in log


def test_the_limit_refuses_with_429_and_says_so(tmp_path, spec, etcd_server, agents):
    agent, control, _ = start_unit(
        tmp_path, spec, agents, etcd_server, "--restart-limit", "1/10m", ready_after=0
    )
    assert control.restart().status_code == 202
    assert control.finished(agent=agent)["last_restart"]["result"] == "ok"
    value = etcd_server.get(KEY)
    refused = control.restart()
    assert refused.status_code == 429, refused.text
    assert 590 <= int(refused.headers["Retry-After"]) <= 600
    status = control.status()
    assert status["limit"] | {"retry_after_seconds": 0} == {
        "limit": 1,
        "window_seconds": 600.0,
        "used": 1,
        "limited": True,
        "retry_after_seconds": 0,
        "refused": 1,
    }
    assert status["restarts"] == 1 and status["restart"] is None
    agent.wait_log("the limit of 1 per 10m is reached; the next one is allowed in")
    assert etcd_server.get(KEY) == value  # refused: nothing changed

    # A restart while the agent itself is stopping: 503.
    agent.signal(signal.SIGTERM)
    eventually(lambda: etcd_server.get(KEY)[0]["state"] == "draining", 10, "draining", agent)
    assert control.restart().status_code == 503
    assert agent.wait(30) == 0


def test_no_restart_while_the_registry_is_down(tmp_path, spec, etcd_server, agents):
    agent, control, port = start_unit(tmp_path, spec, agents, etcd_server)
    first = etcd_server.get(KEY)[0]
    assert first is not None
    pid = control.status()["pid"]
    etcd_server.stop()
    assert control.restart().status_code == 202
    last = control.finished(agent=agent)["last_restart"]
    assert last["result"] == "aborted"
    assert last["reason"].startswith(f"could not deregister from etcd {etcd_server.url}")
    assert [s["step"] for s in last["steps"]] == []
    agent.wait_log("the agent does not restart a unit the gateway may still send requests to")
    # The unit was not touched, and is registered again as it was once etcd is back.
    status = control.status()
    assert status["pid"] == pid and status["restarts"] == 0 and port_open(port)
    assert not (tmp_path / "marker").exists()
    etcd_server.restart()
    eventually(lambda: etcd_server.get(KEY)[0] == first, 40, "the same registration", agent)
    assert control.status()["pid"] == pid


def test_a_token_file_others_can_read_is_refused_at_start(tmp_path, spec, etcd_server, agents):
    port = free_port()
    marker = tmp_path / "started"
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", f"127.0.0.1:{port}"),
        *("--control-listen", f"127.0.0.1:{free_port()}"),
        *("--control-token-file", str(token_file(tmp_path, mode=0o644)), "--"),
        *("sh", "-c", f"touch {marker}; sleep 30"),
    )
    assert agent.wait(30) == 2
    assert "is accessible by group or others (mode 0644)" in agent.log()
    assert "chmod 600" in agent.log() and TOKEN not in agent.log()
    assert not marker.exists()  # no program started
    assert etcd_server.get(KEY) == (None, 0)  # nothing registered


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_sigterm_during_a_restart_cancels_it_and_stops(tmp_path, spec, etcd_server, agents):
    agent, control, port = start_unit(tmp_path, spec, agents, etcd_server, ready_after=0, grace=60)
    pid = control.status()["pid"]
    restart_id = control.restart().json()["restart"]
    eventually(lambda: etcd_server.get(KEY)[0] is None, 30, "deregistered", agent)
    agent.wait_log("then 1m of grace")
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0  # the program's own code, without waiting out the grace
    assert f"restart {restart_id} cancelled: SIGTERM: the agent is stopping" in agent.log()
    assert not port_open(port) and not group_members(pid)
    assert etcd_server.get(KEY) == (None, 0)
