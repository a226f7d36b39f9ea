"""Fixtures shared by every test: real backends, a real nginx, Redis and etcd, a gateway
kept in step by `nginxgen watch`. What they are built from lives in tests/helpers/."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Backend,
    Etcd,
    Nginx,
    RedisServer,
    WatchedGateway,
    require_component,
    skip_or_fail,
    start_watched_gateway,
    world_readable_dir,
)
from tests.helpers.agent import AgentProcess, agent_factory


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


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    """Factory: backends("a") starts a backend named 'a' (echo=True: an echoing one); all
    are stopped afterwards."""
    started: list[Backend] = []

    def start(name: str, port: int | None = None, *, echo: bool = False, **kw: Any) -> Backend:
        b = Backend(name, port, echo=echo, **kw).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


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


@pytest.fixture
def watched_gateway(
    workdir: Path, nginx_runner: Callable[[Path, Path, int], Nginx]
) -> Iterator[Callable[..., WatchedGateway]]:
    """Factory: watched_gateway(services, registry=..., watch=..., extra=..., **nginx) is
    nginx kept in step by a `nginxgen watch` process (tests/helpers/gateway.py); the
    watcher is killed at teardown, nginx stopped."""
    made: list[WatchedGateway] = []

    def make(services: dict[str, Any] | None = None, **kwargs: Any) -> WatchedGateway:
        gw = start_watched_gateway(workdir, nginx_runner, services, **kwargs)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        if gw.proc is not None:
            gw.proc.kill()
            gw.proc.wait(10)


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Factory: agents(spec, "--service", "app", ...) runs `nginxgen agent`; killed after."""
    yield from agent_factory(tmp_path)


@pytest.fixture
def mounts() -> Iterator[Callable[..., None]]:
    """mounts(*mount_args): run `mount` as root; everything is unmounted afterwards."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root (scripts/test runs as root)")
    done: list[str] = []

    def mount(*args: str) -> None:
        out = subprocess.run(["mount", *args], capture_output=True, text=True)
        if out.returncode != 0:
            skip_or_fail(f"cannot mount here ({out.stderr.strip()}): no CAP_SYS_ADMIN?")
        done.append(args[-1])

    yield mount
    for point in reversed(done):
        subprocess.run(["umount", point], check=True)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests must talk to loopback directly, whatever the machine's proxy settings."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    os.environ.setdefault("NGINXGEN_TEST", "1")


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


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[Etcd]:
    """A running etcd; `.url`, `.ctl(...)`, `.restart()`. Stopped after the test."""
    require_component("etcd")
    require_component("etcdctl")  # Etcd.ctl
    server = Etcd(tmp_path / "etcd-data").start()
    yield server
    server.stop()
