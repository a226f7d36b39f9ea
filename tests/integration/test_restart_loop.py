"""The restart loop closed, as deployed: two units each wrapped by `nginxgen agent` with its
control endpoint, real etcd, real nginx kept in step by `nginxgen watch` with probes and
`recovery: {agent: true}`. One unit's application hangs while its process and heartbeat
stay up; the gateway takes it out, asks its agent, the agent restarts it, and it comes
back on the first warm-up step, under client load with no failed request."""

from __future__ import annotations

import functools
import re
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import Client, WatchedGateway, free_port, nginx_workers
from tests.helpers import poll_until as eventually
from tests.helpers.agent import AgentProcess, Control, token_file
from tests.integration import test_e2e_agent_watch as e2e

# A unit whose application can hang: GET /hang (sent to it directly) makes every later
# request wait forever, /healthz included, while the process and its listener stay up
# (so the kernel still completes TCP handshakes and the agent's heartbeat goes on). Each
# request other than /healthz and /hang is logged as "<unix time> <pid>" on arrival.
HANGING_UNIT = textwrap.dedent(
    """
    import http.server, os, sys, threading, time
    name, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    hung = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path not in ("/healthz", "/hang"):
                with open(log, "a") as out:
                    out.write(f"{time.time():.3f} {os.getpid()}\\n")
            if self.path == "/hang":
                hung.set()
            elif hung.is_set():
                time.sleep(3600)
            body = name.encode()
            self.send_response(200)
            self.send_header("X-Backend", name)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()
    """
)

etcd_gateway = e2e.etcd_gateway  # the fixture: nginx kept in step with etcd by watch

PERIOD = 4.0  # warm-up: 50 % for 4 s, then full weight
PROBE = {"path": "/healthz", "interval": "0.2s", "timeout": "0.3s", "fall": 2, "rise": 1}


@pytest.fixture
def watched_gateway(watched_gateway):
    """These tests are about the reload path (they count reloads or read server lines):
    endpoints: reload. tests/integration/test_dynamic_endpoints.py has the push path."""
    return functools.partial(watched_gateway, endpoints="reload")


class Unit:
    def __init__(self, tmp_path: Path, name: str) -> None:
        self.name, self.port, self.control_port = name, free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.requests = tmp_path / f"{name}.requests"
        self.script = tmp_path / "hanging_unit.py"
        self.script.write_text(HANGING_UNIT)
        self.control = Control(self.control_port)

    def arrivals(self) -> list[tuple[float, int]]:
        if not self.requests.is_file():
            return []
        return [
            (float(t), int(pid))
            for t, pid in (line.split() for line in self.requests.read_text().splitlines())
        ]

    def hang(self) -> None:
        requests.get(f"http://{self.address}/hang", timeout=5)


def start_unit(agents, gw: WatchedGateway, unit: Unit, agent_token: Path) -> AgentProcess:
    return agents(
        gw.spec,
        *("--service", "app", "--id", unit.name, "--address", unit.address, "--ttl", "3s"),
        # Only a TCP check on the agent's side: the hang is for the gateway to find.
        *("--health-kind", "tcp", "--health-interval", "0.2s", "--wait-healthy"),
        *("--control-listen", f"127.0.0.1:{unit.control_port}"),
        *("--control-token-file", str(agent_token), "--restart-grace", "1s"),
        *("--stop-timeout", "2s", "--"),
        *(sys.executable, str(unit.script), unit.name, str(unit.port), str(unit.requests)),
    )


def weights(conf: str) -> dict[str, int]:
    return {a: int(w) for a, w in re.findall(r"server (127\.0\.0\.1:\d+) weight=(\d+)", conf)}


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class ConfWatch(threading.Thread):
    """Every config nginxgen installs, in order, as {address: weight}."""

    def __init__(self, gw: WatchedGateway) -> None:
        super().__init__(daemon=True)
        self.gw, self.seen, self.halt = gw, [], threading.Event()
        self.seen: list[dict[str, int]] = []

    def run(self) -> None:
        last = ""
        while not self.halt.is_set():
            text = self.gw.conf.read_text()
            if text != last:
                last = text
                self.seen.append(weights(text))
            self.halt.wait(0.01)


def test_a_hung_unit_is_restarted_through_its_agent_and_comes_back_warming(
    tmp_path, etcd_gateway, agents
) -> None:
    (tmp_path / "agent").mkdir()
    (tmp_path / "gateway").mkdir()
    agent_token = token_file(tmp_path / "agent")
    gateway_token = token_file(tmp_path / "gateway")  # the same token, the gateway's copy
    recovery = {"after": 3, "agent": True, "token_file": str(gateway_token), "cooldown": "10m"}
    defaults: dict[str, Any] = {
        "probe": {**PROBE, "recovery": recovery},
        "warmup": {"step_percent": 50, "period": f"{PERIOD:g}s"},
        "timeouts": {"connect": "1s", "read": "1s"},
        "failover": {"on": ["error", "timeout"], "tries": 2},
    }
    gw = etcd_gateway(defaults=defaults, nginx={"worker_processes": 1})
    a, b = Unit(tmp_path, "a"), Unit(tmp_path, "b")
    agent_a = start_unit(agents, gw, a, agent_token)
    start_unit(agents, gw, b, agent_token)
    # Both registered, and b past its ramp (were both on theirs when a returns, it would be
    # a full redeploy: no warm-up for anyone).
    eventually(
        lambda: (w := weights(gw.conf.read_text())).get(a.address) == w.get(b.address) is not None,
        60,
        f"a and b at full weight; {gw.logs()[-2000:]}",
    )
    b_since = at(b.control.status()["registered_at"])
    eventually(lambda: time.time() > b_since + PERIOD + 1, 2 * PERIOD, "b warm")
    # ... and served by nginx's one worker alone: no old worker with an older config (a
    # single-server upstream cannot fail over) still takes connections.
    assert gw.nginx.proc is not None
    eventually(lambda: len(nginx_workers(gw.nginx.proc.pid)) == 1, 30, "one nginx worker")
    old_pid = a.control.status()["pid"]
    confs = ConfWatch(gw)
    confs.start()
    client = Client(gw.url)
    client.start()
    try:
        eventually(lambda: {"a", "b"} <= set(client.results), 30, "traffic on a and b")
        hung_at = time.time()
        a.hang()
        last = a.control.finished(timeout=90, agent=agent_a)["last_restart"]
        assert last["result"] == "ok", last
        mark = len(client.results)
        eventually(lambda: "a" in client.results[mark:], 60, "traffic on the restarted a")
        time.sleep(1.0)  # more requests on both, under the ramp
    finally:
        client.stop()
        confs.halt.set()
        confs.join(10)

    (tmp_path / "watch.log").write_text(gw.logs())  # kept with the test's files
    assert client.failures == [], (client.failures[:3], gw.nginx.log.read_text()[-2000:])
    status = a.control.status()
    assert status["pid"] != old_pid and status["restarts"] == 1
    steps = {s["step"]: at(s["at"]) for s in last["steps"]}
    asked, back = at(last["requested_at"]), steps["registered"]
    assert hung_at < asked < steps["deregistered"] < steps["stopped"] < back

    # No request reached a (hung or restarted) from the restart command to its return.
    between = [(t, pid) for t, pid in a.arrivals() if asked <= t <= back]
    assert between == [], between

    # The gateway called a's agent, logged it and counted it.
    assert re.search(r"recovery for app/a@127\.0\.0\.1:\d+ \(agent\): ok: POST", gw.logs())
    assert gw.metric('nginxgen_recoveries_total{result="ok"}') == 1
    assert gw.metric("nginxgen_recoveries_total") == 1

    # The configs in order: both, then b alone (a pseudo-dead, then deregistered), then a
    # back at half of b's weight (the first warm-up step), then equal again.
    out = next(i for i, w in enumerate(confs.seen) if a.address not in w)
    back_in = next(i for i, w in enumerate(confs.seen) if i > out and a.address in w)
    first = confs.seen[back_in]
    assert first[a.address] * 2 == first[b.address], confs.seen
    assert confs.seen[-1][a.address] == confs.seen[-1][b.address] or time.time() - back < PERIOD
