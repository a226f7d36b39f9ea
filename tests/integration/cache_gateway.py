"""A cached gateway for the integration tests: the real CLI renders it, real nginx serves it,
real Redis stores it, and the backend echoes every request header and the body into its
answer, so whatever reached the backend for one client shows in what another client gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from nginxgen.util.resources import resource_dir
from tests.conftest import Nginx, RedisServer, free_port, write_spec


class EchoBackend:
    """Answers every request with JSON: backend name, method, path, every request header
    (as [name, value] pairs, repeats kept) and the body. `status`, `delay`, `extra_headers`
    and `body` (replaces the echo) change what it answers while it runs; a request with
    `X-Test-Delay: <seconds>` is answered that much later (one slow request among fast ones).
    """

    def __init__(self, name: str = "app") -> None:
        self.name = name
        self.port = free_port()
        self.status = 200
        self.delay = 0.0
        self.extra_headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen = {
                    "backend": backend.name,
                    "method": self.command,
                    "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()],
                    "body": body.decode("latin-1"),
                    "at": time.monotonic(),
                }
                with backend._lock:
                    backend.requests.append(seen)
                delay = float(self.headers.get("X-Test-Delay") or backend.delay)
                if delay:
                    time.sleep(delay)
                payload = backend.body or json.dumps({k: seen[k] for k in seen if k != "at"})
                data = payload if isinstance(payload, bytes) else payload.encode()
                self.send_response(backend.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in backend.extra_headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def headers_seen(self, i: int = -1) -> dict[str, str]:
        """The headers of request `i` (lowercased names; a repeated header joined by ', ')."""
        out: dict[str, str] = {}
        for k, v in self.requests[i]["headers"]:
            out[k.lower()] = f"{out[k.lower()]}, {v}" if k.lower() in out else v
        return out

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class AuthService:
    """An auth_request target: `X-Token: <token>` or `Authorization: Bearer <token>` of a
    known user → 200 with `X-User-Id: <user>`; anything else → 401."""

    def __init__(self, users: dict[str, str]) -> None:
        self.port = free_port()
        self.seen: list[dict[str, str]] = []  # each check's headers, names lowercased
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                service.seen.append({k.lower(): v for k, v in self.headers.items()})
                token = self.headers.get("X-Token") or ""
                bearer = self.headers.get("Authorization") or ""
                if bearer.startswith("Bearer "):
                    token = bearer[len("Bearer ") :]
                user = users.get(token)
                self.send_response(200 if user else 401)
                if user:
                    self.send_header("X-User-Id", user)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/verify"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Gateway:
    url: str
    backend: EchoBackend
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
        self.started: list[EchoBackend] = []

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
        backend = EchoBackend("app")
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
                "redis": {"host": "127.0.0.1", "port": srv.port, **(redis or {})},
                "routes": routes or [{"path": "/c/", "service": "app", "cache": cache or {}}],
            },
            {"app": [{"id": "app-1", "address": backend.address}]},
        )
        conf = self.workdir / "nginx.conf"
        result = render(spec, conf)
        assert result.returncode == 0, result.stderr
        text = conf.read_text()
        lua = str(resource_dir("lua"))
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
