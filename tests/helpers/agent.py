"""Run `nginxgen agent` as a real process, as a container entrypoint would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

from .poll import poll_until
from .servers import REPO


class AgentProcess:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.args = args
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nginxgen.cli", "agent", *args],
                stdout=out,
                stderr=out,
                env=full_env,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout}s:\n{self.log()}") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        eventually(lambda: text in self.log(), timeout, f"{text!r} in the agent log", self)

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


def eventually(
    check: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    agent: AgentProcess | None = None,
    every: float = 0.05,
) -> Any:
    """poll_until, failing with the agent's log."""
    detail = (lambda: f"agent log:\n{agent.log()}") if agent else None
    return poll_until(check, timeout, what, every, detail)


def write_agent_spec(directory: Path, registry: dict[str, Any]) -> Path:
    path = directory / "nginxgen.yaml"
    spec = {"registry": registry, "routes": [{"path": "/", "service": "app"}]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """For a fixture: start(spec, "--service", "app", ...) runs an agent; killed at teardown."""
    started: list[AgentProcess] = []

    def start(spec: Path, *args: str, env: dict[str, str] | None = None) -> AgentProcess:
        log = tmp_path / f"agent-{len(started)}.log"
        agent = AgentProcess(["-c", str(spec), *args], log, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


# --- a unit the agent can restart, and its control endpoint ------------------------------

# A unit to wrap: HTTP on PORT, /healthz 503 for the first READY_AFTER seconds after it
# starts; on SIGTERM it appends "<pid> <listed|absent|unknown>" to MARKER, where the word
# says whether the registry listed the unit at that moment (etcd URL KEY, or consul URL
# SERVICE ID), then exits 0.
UNIT = textwrap.dedent(
    """
    import base64, http.server, json, os, signal, sys, time, urllib.request
    port, ready_after, marker = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    check = sys.argv[4:]
    started = time.monotonic()

    def listed():
        if not check:
            return "unknown"
        if check[0] == "etcd":
            key = base64.b64encode(check[2].encode()).decode()
            body = json.dumps({"key": key}).encode()
            req = urllib.request.Request(check[1] + "/v3/kv/range", body)
            with urllib.request.urlopen(req, timeout=5) as r:
                return "listed" if json.load(r).get("kvs") else "absent"
        with urllib.request.urlopen(f"{check[1]}/v1/health/service/{check[2]}", timeout=5) as r:
            ids = [e["Service"]["ID"] for e in json.load(r)]
        return "listed" if check[3] in ids else "absent"

    def on_term(signum, frame):
        with open(marker, "a") as out:
            out.write(f"{os.getpid()} {listed()}\\n")
        sys.exit(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            ready = self.path != "/healthz" or time.monotonic() - started >= ready_after
            body = json.dumps({"pid": os.getpid()}).encode()
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    signal.signal(signal.SIGTERM, on_term)
    http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)

TOKEN = "test-token-" + "0123456789abcdef" * 2


def unit_command(tmp_path: Path, port: int, ready_after: float, *check: str) -> list[str]:
    """`-- CMD` for the agent: the UNIT script on `port`; MARKER is tmp_path/marker."""
    script = tmp_path / "unit.py"
    script.write_text(UNIT)
    marker = tmp_path / "marker"
    return [sys.executable, str(script), str(port), str(ready_after), str(marker), *check]


def token_file(tmp_path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path = tmp_path / "control.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


class Control:
    """A client of the agent's control endpoint."""

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.token = token
        self.http = requests.Session()
        self.http.trust_env = False

    def call(
        self, method: str, path: str, token: str | None = "default", **headers: str
    ) -> requests.Response:
        token = self.token if token == "default" else token
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        return self.http.request(method, self.url + path, headers=headers, timeout=10)

    def status(self) -> dict[str, Any]:
        r = self.call("GET", "/status")
        assert r.status_code == 200, r.text
        return r.json()

    def restart(self) -> requests.Response:
        return self.call("POST", "/restart")

    def finished(self, timeout: float = 60.0, agent: AgentProcess | None = None) -> dict[str, Any]:
        """/status once the running restart has ended (its `last_restart`)."""

        def done() -> dict[str, Any] | None:
            status = self.status()
            return status if status["restart"] is None and status["last_restart"] else None

        return eventually(done, timeout, "the restart to end", agent, every=0.1)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


class Timeline:
    """Samples conditions in a thread every few milliseconds and keeps when each first held.

    `conditions` maps a name to a check taking the first-seen times so far (so one can
    say "port open again, after it was seen closed"). `stop()` returns {name: seconds
    since start()}."""

    def __init__(self, conditions: dict[str, Callable[[dict[str, float]], bool]]) -> None:
        self.conditions = conditions
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, check in self.conditions.items():
                if name not in self.first and check(self.first):
                    self.first[name] = time.monotonic() - self.started
            self._stop.wait(0.005)

    def wait(self, name: str, timeout: float = 60.0, agent: AgentProcess | None = None) -> float:
        return eventually(lambda: self.first.get(name), timeout, name, agent)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(10)
        return dict(self.first)


class TcpServer:
    """A unit that speaks no HTTP: accepts TCP connections and closes them at once.
    `stop_accepting()` closes its listener, as a crashed server would."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            conn.close()

    def stop_accepting(self) -> None:
        # shutdown() first: a close() alone leaves the socket listening while the thread
        # is blocked in accept() on it.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
