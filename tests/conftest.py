"""Fixtures shared by every test: free ports, real backends, a real nginx."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def world_readable_dir(prefix: str) -> Path:
    """nginx workers run as `nobody`: pytest's 0700 tmp dirs are closed to them."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


# --- backends -------------------------------------------------------------------------


class Backend:
    """A real HTTP server on a loopback port that says who it is and counts requests.

    Behaviour can be changed while it runs: `status`, `delay` (seconds), `health_status`.
    """

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.status = 200
        self.delay = 0.0
        self.health_status = 200
        self.extra_headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> Backend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with backend._lock:
                    backend._connections.add(self.connection)

            def finish(self) -> None:
                with backend._lock:
                    backend._connections.discard(self.connection)
                super().finish()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body_in = self.rfile.read(length) if length else b""
                if self.path.startswith("/healthz"):
                    status, payload = backend.health_status, b"ok"
                else:
                    with backend._lock:
                        backend.requests.append(
                            {
                                "method": self.command,
                                "path": self.path,
                                "headers": dict(self.headers.items()),
                                "body": body_in,
                            }
                        )
                    if backend.delay:
                        time.sleep(backend.delay)
                    status = backend.status
                    payload = (
                        backend.body
                        or json.dumps({"backend": backend.name, "path": self.path}).encode()
                    )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Backend", backend.name)
                for k, v in backend.extra_headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # A dead process takes its kept-alive connections with it; so must a stopped backend.
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    """Factory: backends("a") starts a backend named 'a'; all are stopped afterwards."""
    started: list[Backend] = []

    def start(name: str, port: int | None = None) -> Backend:
        b = Backend(name, port).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def who_answers(url: str, n: int, **kwargs: Any) -> Counter[str]:
    """Send n GETs; count the answering backend names (status != 200 counted as 'HTTP <n>')."""
    seen: Counter[str] = Counter()
    with requests.Session() as s:
        for _ in range(n):
            r = s.get(url, timeout=10, **kwargs)
            seen[
                r.headers.get("X-Backend", "?") if r.status_code == 200 else f"HTTP {r.status_code}"
            ] += 1
    return seen


# --- nginx ----------------------------------------------------------------------------


class Nginx:
    """A real nginx master started with a config file; reloadable; stopped at teardown."""

    def __init__(self, conf: Path, pid: Path, binary: str = "nginx") -> None:
        self.conf = conf
        self.pid_file = pid
        self.binary = shutil.which(binary) or shutil.which(binary, path="/usr/sbin") or binary
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = conf.parent / "nginx.stderr"

    def start(self, port: int) -> Nginx:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf), "-e", "stderr", "-g", "daemon off;"],
                stdout=log,
                stderr=log,
            )
        try:
            wait_for_port(port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def errors(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temp dir nginx's workers (user nobody) can read."""
    path = world_readable_dir("nginxgen-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nginx_runner() -> Iterator[Callable[[Path, Path, int], Nginx]]:
    """Factory: nginx_runner(conf, pid, port) starts nginx with that config."""
    started: list[Nginx] = []

    def start(conf: Path, pid: Path, port: int) -> Nginx:
        n = Nginx(conf, pid).start(port)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


def write_spec(directory: Path, spec: dict[str, Any], services: dict[str, Any]) -> Path:
    """Write nginxgen.yaml + services.yaml (file registry) into `directory`."""
    import yaml

    (directory / "services.yaml").write_text(yaml.safe_dump({"services": services}))
    full = {"registry": {"kind": "file", "path": "services.yaml"}, **spec}
    path = directory / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(full, sort_keys=False))
    return path


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests must talk to loopback directly, whatever the machine's proxy settings."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    os.environ.setdefault("NGINXGEN_TEST", "1")


# --- etcd -----------------------------------------------------------------------------


class EtcdServer:
    """A real single-member etcd on free loopback ports, data in a temp dir.

    Restartable on the same ports (`restart(wipe=True)` also throws the data away, as a
    replaced cluster would). Reads go through etcd's v3 JSON gateway.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.log = root / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    shutil.which("etcd") or "etcd",
                    "--name=default",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={self.url}",
                    f"--advertise-client-urls={self.url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=default={peer}",
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log.read_text()[-2000:]}")
            try:
                r = requests.get(self.url + "/health", timeout=1)
                if r.ok and r.json().get("health") == "true":
                    return self
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, wipe: bool = False) -> None:
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(self.url + path, json=body, timeout=5)
        r.raise_for_status()
        return r.json()

    def get(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """(JSON value, lease id; 0 = no lease) of one key, or (None, 0) when absent."""
        import base64

        answer = self._call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None, 0
        value = json.loads(base64.b64decode(kvs[0]["value"]))
        return value, int(kvs[0].get("lease") or 0)

    def lease_ttl(self, lease: int) -> int:
        """Seconds left on a lease; -1 when it does not exist."""
        return int(self._call("/v3/lease/timetolive", {"ID": lease}).get("TTL", -1))


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path / "etcd")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()
