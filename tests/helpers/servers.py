"""Real servers the tests start on free loopback ports in temp dirs, and stop: nginx,
redis-server, etcd. Each waits until it answers before it is handed out."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from .net import free_port, wait_for_port
from .tls import TlsFiles
from .tools import find_nginx, find_tool

REPO = Path(__file__).resolve().parents[2]


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


def fake_master(title: str, *, exit_on_hup: bool = True) -> subprocess.Popen[bytes]:
    """A process whose command line reads like `title` (as nginx sets its own title);
    it exits 7 on SIGHUP, or ignores it."""
    on_hup = "lambda *a: sys.exit(7)" if exit_on_hup else "signal.SIG_IGN"
    code = (
        "import signal,sys,time\n"
        f"signal.signal(signal.SIGHUP, {on_hup})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    )
    child = subprocess.Popen(
        ["bash", "-c", f'exec -a "{title}" "$0" -c "$1"', sys.executable, code],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


def nginx_workers(master: int) -> set[int]:
    """PIDs of an nginx master's workers (its children that say so in their title)."""
    out: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
            title = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(master) and b"worker" in title:
            out.add(int(status.parent.name))
    return out


def settled_workers(master: int, timeout: float = 10.0) -> set[int]:
    """The workers once all have their title (a fresh fork still shows the master's):
    two reads 0.3 s apart that agree."""
    deadline = time.monotonic() + timeout
    last = nginx_workers(master)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = nginx_workers(master)
        if now and now == last:
            return now
        last = now
    return last


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
