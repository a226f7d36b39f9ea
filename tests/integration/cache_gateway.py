"""A cached gateway for the integration tests: the real CLI renders it, real nginx serves it,
real Redis stores it, and the backend echoes every request header and the body into its
answer (tests/helpers' Backend with echo=True), so whatever reached the backend for one
client shows in what another client gets.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from nginxgen.deploy.lua_tree import lua_tree_dir
from tests.helpers import Backend, Nginx, RedisServer, free_port, write_spec

# A fill is stored from a timer after its answer went out, and a store that outlives the
# Redis timeouts (100/200 ms by default) is dropped: the cache fails open, so the next
# request misses and fills again. On a loaded 2-core CI machine that happened once in a
# full run; these tests check what is stored and served, not Redis latency, so they give
# Redis time. Tests of timeouts and outages pass their own values.
SLACK = {"connect_timeout": "2s", "read_timeout": "2s"}


@dataclass
class Gateway:
    url: str
    backend: Backend
    nginx: Nginx
    conf: Path
    redis: RedisServer

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)


def render(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(out), *extra],
        capture_output=True,
        text=True,
    )


class CachedGateways:
    """start(cache={...}) renders a gateway whose route /c/ caches and starts it.

    `routes` replaces the single route (service `app` is the echo backend); `redis` adds
    redis settings; `lua_dir` moves the Lua modules (as if installed there); `lua_path`
    puts directories before them on lua_package_path (a different Redis client library).
    """

    def __init__(
        self,
        workdir: Path,
        nginx_runner: Callable[[Path, Path, int], Nginx],
        redis_server: Callable[..., RedisServer],
    ) -> None:
        self.workdir = workdir
        self.nginx_runner = nginx_runner
        self.redis_server = redis_server
        self.started: list[Backend] = []

    def __call__(
        self,
        cache: dict[str, Any] | None = None,
        redis: dict[str, Any] | None = None,
        redis_srv: RedisServer | None = None,
        routes: list[dict[str, Any]] | None = None,
        lua_dir: Path | None = None,
        lua_path: tuple[Path, ...] = (),
        server_name: str = "api.example.com",
    ) -> Gateway:
        srv = redis_srv or self.redis_server()
        backend = Backend("app", echo=True).start()
        self.started.append(backend)
        port = free_port()
        spec = write_spec(
            self.workdir,
            {
                "nginx": {
                    "flavor": "nginx",
                    "listen": f"127.0.0.1:{port}",
                    "pid": "nginx.pid",
                    "server_name": server_name,
                },
                "redis": {"host": "127.0.0.1", "port": srv.port, **SLACK, **(redis or {})},
                "routes": routes or [{"path": "/c/", "service": "app", "cache": cache or {}}],
            },
            {"app": [{"id": "app-1", "address": backend.address}]},
        )
        conf = self.workdir / "nginx.conf"
        result = render(spec, conf)
        assert result.returncode == 0, result.stderr
        text = conf.read_text()
        lua = str(lua_tree_dir(conf.parent))  # render -o installs the Lua modules there
        if lua_dir is not None:  # as if nginxgen were installed there
            text = text.replace(lua, str(lua_dir))
            lua = str(lua_dir)
        if lua_path:
            before = "".join(f"{p}/?.lua;" for p in lua_path)
            text = text.replace(f"{lua}/?.lua;;", f"{before}{lua}/?.lua;;")
            assert before in text
        conf.write_text(text)
        nginx = self.nginx_runner(conf, self.workdir / "nginx.pid", port)
        return Gateway(f"http://127.0.0.1:{port}", backend, nginx, conf, srv)

    def stop(self) -> None:
        for b in self.started:
            b.stop()
