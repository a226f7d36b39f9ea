"""`nginxgen agent` against Consul's agent HTTP API, replayed by an in-process server.

The fake answers the endpoints the way Consul's docs describe them (PUT, empty 200 body;
404 "Unknown check ID" for a check the agent no longer knows) and records every call.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.agent_proc import AgentProcess, agent_factory, eventually, write_agent_spec
from tests.conftest import REPO
from tests.tls import TlsFiles, make_tls_files


class FakeConsul:
    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.services: dict[str, dict[str, Any]] = {}  # what a real agent would hold
        self.broken = False  # answer 500 to everything, like a Consul without a leader
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                call = {
                    "path": unquote(url.path),
                    "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                    "body": json.loads(raw) if raw else None,
                    "token": self.headers.get("X-Consul-Token"),
                }
                with fake.lock:
                    fake.calls.append(call)
                    status, text = fake.answer(call)
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        if tls is not None:  # https, and only for clients with a certificate from tls.ca
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.url = self.url.replace("http://", "https://")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, call: dict[str, Any]) -> tuple[int, str]:
        if self.broken:
            return 500, "No cluster leader"
        path = call["path"]
        if path == "/v1/agent/service/register":
            self.services[call["body"]["ID"]] = {"maintenance": False, "check": "critical"}
            return 200, ""
        for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
            prefix = f"/v1/agent/check/{verb}/service:"
            if path.startswith(prefix):
                sid = path[len(prefix) :]
                if sid not in self.services:
                    return 404, f'Unknown check ID "service:{sid}"'
                self.services[sid]["check"] = status
                return 200, ""
        if path.startswith("/v1/agent/service/maintenance/"):
            sid = path.rsplit("/", 1)[1]
            if sid not in self.services:
                return 404, f'Unknown service ID "{sid}"'
            self.services[sid]["maintenance"] = call["query"].get("enable") == "true"
            return 200, ""
        if path.startswith("/v1/agent/service/deregister/"):
            sid = path.rsplit("/", 1)[1]
            if self.services.pop(sid, None) is None:
                return 404, f'Unknown service ID "{sid}"'
            return 200, ""
        return 404, "not found"

    def paths(self) -> list[str]:
        with self.lock:
            return [c["path"] for c in self.calls]

    def forget(self) -> None:
        """What a restarted Consul agent without persisted state does."""
        with self.lock:
            self.services.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def consul() -> Iterator[FakeConsul]:
    fake = FakeConsul()
    yield fake
    fake.stop()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    yield from agent_factory(tmp_path)


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
    eventually(lambda: consul.services["app-1"]["check"] == "critical", 30, "fail", agent)
    assert FAIL in consul.paths()
    app.health_status = 200
    eventually(lambda: consul.services["app-1"]["check"] == "passing", 30, "pass", agent)

    # A Consul agent that forgot us: 404 on the pass, then a fresh registration.
    consul.forget()
    eventually(lambda: "app-1" in consul.services, 30, "re-registration", agent)
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
    assert consul.services == {}


def test_consul_over_tls_with_a_client_certificate(tmp_path, agents, backends):
    tls = make_tls_files(tmp_path / "pki")
    consul = FakeConsul(tls)
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
        assert consul.services == {}
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
