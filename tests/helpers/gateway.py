"""A gateway as deployed: nginx serving a config that `nginxgen watch` keeps in step with the
registry, both real processes. One factory for every registry (the file registry by
default; pass `registry` for etcd or another), used through tests/conftest.py's
`watched_gateway` fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from .backend import who_answers
from .net import free_port
from .poll import poll_until
from .servers import REPO, Nginx


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


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`nginxgen ARGS` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def metric(text: str, name: str) -> float:
    """A sample's value: `name` alone sums every label set, `name{label="x"}` is one."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or (line.startswith(name + "{") and "{" not in name)
    ]
    if not values:
        raise KeyError(name)
    return sum(values)


@dataclass
class WatchedGateway:
    """nginx on a config rendered by `nginxgen watch --once`, then kept in step by a
    `nginxgen watch` process (the sidecar), as deployed."""

    dir: Path
    spec: Path
    port: int
    health_port: int
    nginx: Nginx
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def conf(self) -> Path:
        return self.dir / "nginx.conf"

    def healthz(self) -> tuple[int, str]:
        try:
            r = requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5)
        except requests.ConnectionError:
            return 0, "not listening"
        return r.status_code, r.text

    def metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5).text

    def metric(self, name: str) -> float:
        return metric(self.metrics(), name)

    def start_watch(self) -> None:
        self.log = self.dir / "watch.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nginxgen.cli", "watch", "-c", str(self.spec)],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        poll_until(lambda: self.healthz()[0] == 200, 30, "a healthy watcher", detail=self.logs)

    def stop_watch(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        self.proc = None
        return rc

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def serves_only(self, name: str, n: int = 6) -> bool:
        return who_answers(self.url, n, fresh=True) == {name: n}


# The watcher's timings in these tests: quick to react, quick to retry.
WATCH = {
    "debounce": {"min": "100ms", "max": "1s"},
    "backoff": {"initial": "100ms", "max": "1s"},
    "confirm_timeout": "10s",
}


def start_watched_gateway(
    workdir: Path,
    nginx_runner: Callable[[Path, Path, int], Nginx],
    services: dict[str, Any] | None = None,
    *,
    registry: dict[str, Any] | None = None,
    watch: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,  # more top-level spec keys (defaults, ...)
    **nginx: Any,
) -> WatchedGateway:
    """Write the spec (route / to service `app`), render it with `watch --once`, start
    nginx on it and then the watcher. Without `registry`, `services` go into a file
    registry polled every 50 ms."""
    port, health = free_port(), free_port()
    spec: dict[str, Any] = {
        "nginx": {
            "flavor": "nginx",
            "listen": f"127.0.0.1:{port}",
            "output": "nginx.conf",
            "pid": "nginx.pid",
            # Never the default 127.0.0.1:9181: another nginx on the machine (a parallel
            # test run) would answer for this one's generation.
            "status_listen": f"127.0.0.1:{free_port()}",
            **nginx,
        },
        "watch": {"listen": f"127.0.0.1:{health}", **WATCH, **(watch or {})},
        "routes": [{"path": "/", "service": "app"}],
        **(extra or {}),
    }
    path = write_spec(workdir, spec, services or {})
    data = yaml.safe_load(path.read_text())
    # The file registry polls fast so the tests do not wait on it.
    data["registry"] = registry or {**data["registry"], "poll": "50ms"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    first = run_cli("watch", "-c", str(path), "--once")
    assert first.returncode == 0, first.stderr
    assert "nginx is not running" in first.stderr
    server = nginx_runner(workdir / "nginx.conf", workdir / "nginx.pid", port)
    gw = WatchedGateway(workdir, path, port, health, server)
    gw.start_watch()
    return gw


class Client(threading.Thread):
    """Requests in a loop on fresh connections until stopped (bounded), recording results."""

    def __init__(self, url: str, limit: int = 20000) -> None:
        super().__init__(daemon=True)
        self.url, self.limit = url, limit
        self.results: list[str] = []
        self.failures: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set() and len(self.results) < self.limit:
            try:
                r = requests.get(self.url, headers={"Connection": "close"}, timeout=10)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
                continue
            if r.status_code != 200:
                self.failures.append(f"HTTP {r.status_code}: {r.text[:100]}")
            self.results.append(r.headers.get("X-Backend", "?"))

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
