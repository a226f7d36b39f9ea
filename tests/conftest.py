"""Fixtures shared by every test: free ports, real backends, a real nginx."""

from __future__ import annotations

import base64
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

from tests.helpers import find_nginx, find_tool, require_component
from tests.tls import TlsFiles

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(*components): components from tests/helpers/components.py the test needs; "
        "skipped without them, failed under CI=true",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires"):
        for name in mark.args:
            require_component(name)


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


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM a server process, SIGKILL it if it lingers, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


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
            # Headers and body go out as two writes: with Nagle on, each kept-alive answer
            # waited for a delayed ACK (40 ms), and 42 requests took 1.5 s instead of 0.15.
            disable_nagle_algorithm = True

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

    def __init__(self, conf: Path, pid: Path, binary: str | None = None) -> None:
        self.conf = conf
        self.pid_file = pid
        if binary is None:  # the one tests/helpers finds (nginx or OpenResty)
            found = find_nginx()
            binary = found.path if found else "nginx"
        self.binary = binary
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
    require_component("nginx")
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
    # The status listener defaults to a fixed port; tests run side by side need their own.
    nginx = spec.get("nginx", {})
    if "status_listen" not in nginx:
        spec = {**spec, "nginx": {**nginx, "status_listen": f"127.0.0.1:{free_port()}"}}
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


# --- redis ----------------------------------------------------------------------------


class RedisServer:
    """A real redis-server on a loopback port, in a temp dir, without persistence.

    stop() and start() again keep the port, so a test can simulate an outage and recovery.
    """

    def __init__(self, directory: Path, port: int | None = None, password: str | None = None):
        self.dir = directory
        self.port = port or free_port()
        self.password = password
        self.unix_socket = directory / "redis.sock"  # also listened on, for nginx's workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisServer:
        binary = find_tool("redis-server") or "redis-server"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.log)]
        cmd += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "777"]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.command("PING") in ("PONG", "NOAUTH"):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def command(self, *args: str) -> Any:
        """One command over RESP; returns a str, int, list, or None (nil)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            f = s.makefile("rwb")
            if self.password:
                f.write(_resp(("AUTH", self.password)))
            f.write(_resp(args))
            f.flush()
            if self.password:
                _read_resp(f)
            return _read_resp(f)


def _resp(args: tuple[str, ...] | list[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        data = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_resp(f: Any) -> Any:
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        return rest.split(" ", 1)[0]  # e.g. NOAUTH, WRONGPASS
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if rest == "-1":
            return None
        data = f.read(int(rest) + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        return [_read_resp(f) for _ in range(int(rest))]
    raise OSError(f"unexpected reply from redis: {line!r}")


@pytest.fixture
def redis_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory: redis_server() starts a redis-server (optionally password=...)."""
    require_component("redis-server")
    started: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        r = RedisServer(world_readable_dir("nginxgen-redis-"), password=password).start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()
        shutil.rmtree(r.dir, ignore_errors=True)


# --- etcd -----------------------------------------------------------------------------


class Etcd:
    """A real single-member etcd on free loopback ports. stop()/start() keep the data dir and
    the ports, so a test can restart it under a running watch."""

    def __init__(self, data_dir: Path, tls: TlsFiles | None = None) -> None:
        self.data_dir = data_dir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.tls = tls  # clients must then show a certificate signed by tls.ca

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    def _client_tls(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        return {
            "verify": str(self.tls.ca),
            "cert": (str(self.tls.client_cert), str(self.tls.client_key)),
        }

    def start(self) -> Etcd:
        client, peer = self.url, f"http://127.0.0.1:{self.peer_port}"
        tls_args = []
        if self.tls is not None:
            tls_args = [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                "--client-cert-auth",
                f"--trusted-ca-file={self.tls.ca}",
            ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    find_tool("etcd") or "etcd",
                    "--name=test",
                    f"--data-dir={self.data_dir}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=test={peer}",
                    "--initial-cluster-state=new",
                    "--log-level=error",
                    *tls_args,
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log.read_text()[-2000:]}")
            try:
                health = requests.get(f"{client}/health", timeout=1, **self._client_tls())
                if health.json().get("health") == "true":
                    return self
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def restart(self, wipe: bool = False) -> None:
        """Stop and start on the same ports; `wipe` throws the data away (a replaced cluster)."""
        self.stop()
        if wipe:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.start()

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(self.url + path, json=body, timeout=5, **self._client_tls())
        r.raise_for_status()
        return r.json()

    def get(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """(JSON value, lease id; 0 = no lease) of one key, or (None, 0) when absent."""
        answer = self._call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None, 0
        value = json.loads(base64.b64decode(kvs[0]["value"]))
        return value, int(kvs[0].get("lease") or 0)

    def lease_ttl(self, lease: int) -> int:
        """Seconds left on a lease; -1 when it does not exist."""
        return int(self._call("/v3/lease/timetolive", {"ID": lease}).get("TTL", -1))

    def ctl(self, *args: str, timeout: float = 15) -> str:
        """Run etcdctl against this server; returns stdout."""
        tls = self.tls
        if tls is not None:
            args = (
                f"--cacert={tls.ca}",
                f"--cert={tls.client_cert}",
                f"--key={tls.client_key}",
                *args,
            )
        out = subprocess.run(
            [find_tool("etcdctl") or "etcdctl", f"--endpoints={self.url}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "ETCDCTL_API": "3"},
        )
        if out.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[Etcd]:
    """A running etcd; `.url`, `.ctl(...)`, `.restart()`. Stopped after the test."""
    require_component("etcd")
    require_component("etcdctl")  # Etcd.ctl
    server = Etcd(tmp_path / "etcd-data").start()
    yield server
    server.stop()
