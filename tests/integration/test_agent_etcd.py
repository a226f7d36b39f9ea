"""`nginxgen agent` against a real etcd: registration, heartbeat, health, drain, outages."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers import Etcd, free_port, wait_for_port
from tests.helpers.agent import eventually, write_agent_spec

KEY = "/services/app/app-1"


@pytest.fixture
def spec(tmp_path: Path, etcd_server: Etcd) -> Path:
    return write_agent_spec(tmp_path, {"kind": "etcd", "url": etcd_server.url})


def state(etcd: Etcd) -> str | None:
    value, _ = etcd.get(KEY)
    return value["state"] if value else None


def test_registers_with_a_lease_and_keeps_it_alive(spec, etcd_server, agents, backends):
    app = backends("app")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "3s"),
        *("--weight", "7", "--tag", "v2", "--meta", "zone=a", "--meta", "rack=r1"),
    )
    value = eventually(lambda: etcd_server.get(KEY)[0], 30, "the instance key", agent)
    assert value == {
        "id": "app-1",
        "address": app.address,
        "weight": 7,
        "state": "up",
        "registered_at": value["registered_at"],
        "tags": ["v2"],
        "meta": {"rack": "r1", "zone": "a"},
    }
    registered = datetime.fromisoformat(value["registered_at"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= registered <= datetime.now(timezone.utc)
    _, lease = etcd_server.get(KEY)
    assert lease != 0
    assert 0 < etcd_server.lease_ttl(lease) <= 3

    # The heartbeat outlives the TTL several times over: same lease, key still there.
    time.sleep(7)
    assert agent.alive(), agent.log()
    assert etcd_server.get(KEY) == (value, lease)
    assert agent.log().count("registered in etcd") == 1


def test_unhealthy_unit_is_marked_down_then_up_again(spec, etcd_server, agents, backends):
    app = backends("app")
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "3s"),
        *("--health-url", f"http://{app.address}/healthz", "--health-interval", "0.2s"),
        *("--fall", "3", "--rise", "2"),
    )
    # Registered as starting; up once the health URL has passed `rise` times.
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    first = etcd_server.get(KEY)[0]
    assert first is not None

    app.health_status = 500
    failed_at = time.monotonic()
    eventually(lambda: state(etcd_server) == "down", 30, "state down", agent)
    took = time.monotonic() - failed_at
    # fall x interval = 0.6s; the bound leaves room for a loaded machine.
    assert took < 0.6 + 5, took
    assert "failed 3 time(s) in a row (HTTP 500): marking down" in agent.log()

    app.health_status = 200
    eventually(lambda: state(etcd_server) == "up", 30, "state up again", agent)
    again = etcd_server.get(KEY)[0]
    assert again is not None
    # The unit did not restart: registered_at stays; the heartbeat never stopped.
    assert again["registered_at"] == first["registered_at"]
    assert "passed 2 time(s) in a row: marking up" in agent.log()


def test_wait_healthy_registers_only_after_the_first_2xx(spec, etcd_server, agents, backends):
    app = backends("app")
    app.health_status = 503
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address),
        *("--health-url", f"http://{app.address}/healthz", "--health-interval", "0.2s"),
        "--wait-healthy",
    )
    agent.wait_log("before registering")
    time.sleep(1.5)
    assert etcd_server.get(KEY) == (None, 0)
    app.health_status = 200
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)


def test_sigterm_drains_then_deregisters_and_exits_0(spec, etcd_server, agents, backends):
    app = backends("app")
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--drain", "3s"),
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    agent.signal(signal.SIGTERM)
    signalled = time.monotonic()
    eventually(lambda: state(etcd_server) == "draining", 10, "state draining", agent)
    # Visible for the drain window, then gone.
    eventually(lambda: state(etcd_server) is None, 30, "key deleted", agent, every=0.02)
    drained = time.monotonic() - signalled
    assert drained >= 2.5, drained
    assert agent.wait() == 0
    assert "deregistered from etcd" in agent.log()


def test_second_signal_skips_the_drain(spec, etcd_server, agents, backends):
    app = backends("app")
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--drain", "120s"),
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    agent.signal(signal.SIGTERM)
    eventually(lambda: state(etcd_server) == "draining", 10, "state draining", agent)
    agent.signal(signal.SIGINT)
    assert agent.wait(20) == 0
    assert state(etcd_server) is None
    assert "second SIGINT: skipping the rest of the drain" in agent.log()


def test_inflight_url_ends_the_drain_early(spec, etcd_server, agents, backends):
    app = backends("app")
    app.body = b'{"inflight": 0}'
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--drain", "120s"),
        *("--inflight-url", f"http://{app.address}/inflight", "--drain-min", "0.5s"),
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    agent.signal(signal.SIGTERM)
    assert agent.wait(20) == 0
    assert state(etcd_server) is None
    assert "no requests in flight" in agent.log()


def test_sigkill_leaves_the_key_to_expire_with_its_lease(spec, etcd_server, agents, backends):
    app = backends("app")
    agent = agents(
        spec, *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "3s")
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    agent.signal(signal.SIGKILL)
    agent.wait()
    killed = time.monotonic()
    eventually(lambda: state(etcd_server) is None, 30, "key expired", every=0.1)
    gone_after = time.monotonic() - killed
    # Nobody deleted it: etcd did, when the lease ran out (up to one TTL after the last beat).
    assert 0.5 < gone_after < 3 + 10, gone_after


@pytest.mark.parametrize("wipe", [False, True], ids=["data-kept", "data-wiped"])
def test_etcd_restart_under_the_agent(spec, etcd_server, agents, backends, wipe):
    app = backends("app")
    agent = agents(
        spec, *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "3s")
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    first = etcd_server.get(KEY)[0]
    assert first is not None

    etcd_server.stop()
    agent.wait_log("registry unreachable")
    time.sleep(4)  # longer than the TTL: the agent must neither exit nor give up
    assert agent.alive(), agent.log()
    etcd_server.restart(wipe=wipe)

    eventually(lambda: state(etcd_server) == "up", 40, "re-registration", agent)
    value, lease = etcd_server.get(KEY)
    assert value is not None and value["registered_at"] == first["registered_at"]
    assert etcd_server.lease_ttl(lease) > 0
    agent.wait_log("reachable again", 40)
    # And it stays registered: the heartbeat runs on the (new) lease.
    time.sleep(4)
    assert etcd_server.get(KEY)[1] == lease


CHILD = textwrap.dedent(
    """
    import base64, http.server, json, signal, sys, urllib.request
    port, etcd, marker, code = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])

    def on_term(signum, frame):
        # What does the registry say at the moment we are told to stop?
        key = base64.b64encode(b"/services/app/app-1").decode()
        req = urllib.request.Request(etcd + "/v3/kv/range", json.dumps({"key": key}).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            present = bool(json.load(r).get("kvs"))
        open(marker, "w").write("present" if present else "absent")
        sys.exit(code)

    signal.signal(signal.SIGTERM, on_term)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler
        ).serve_forever()
    """
)


def test_wrapped_program_is_stopped_after_deregistration(spec, etcd_server, agents, tmp_path):
    port = free_port()
    script = tmp_path / "backend.py"
    script.write_text(CHILD)
    marker = tmp_path / "marker"
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", f"127.0.0.1:{port}"),
        *("--health-url", f"http://127.0.0.1:{port}/", "--health-interval", "0.2s"),
        *("--wait-healthy", "--drain", "1s", "--"),
        *(sys.executable, str(script), str(port), etcd_server.url, str(marker), "7"),
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    wait_for_port(port)
    agent.signal(signal.SIGTERM)
    # The agent exits with the program's own code, after the program saw the key gone.
    assert agent.wait(30) == 7, agent.log()
    assert marker.read_text() == "absent"
    assert state(etcd_server) is None


def test_program_that_exits_by_itself_is_deregistered(spec, etcd_server, agents, backends):
    app = backends("app")
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--"),
        *(sys.executable, "-c", "import time, sys; time.sleep(3); sys.exit(5)"),
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    assert agent.wait(30) == 5
    assert state(etcd_server) is None
    assert "exited by itself with code 5" in agent.log()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sigterm_during_an_outage_drains_quietly_and_exits_0(spec, etcd_server, agents, backends):
    app = backends("app")
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", app.address, "--ttl", "2s"),
        *("--drain", "3s"),
    )
    eventually(lambda: state(etcd_server) == "up", 30, "state up", agent)
    etcd_server.stop()
    agent.wait_log("registry unreachable")
    used = cpu_seconds(agent.proc.pid)
    agent.signal(signal.SIGTERM)
    agent.wait_log("drain time 3s is over")
    # Waiting is sleeping: no busy loop while the registry is away.
    assert cpu_seconds(agent.proc.pid) - used < 1.0
    assert agent.wait(30) == 0
    assert "could not deregister" in agent.log()
    assert "when its TTL runs out" in agent.log()
