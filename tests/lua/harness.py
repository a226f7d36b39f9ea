"""Hand-written nginx.conf pieces for the Lua tests: the dynamic upstream feed as the
Python side will render it (docs/endpoints-feed.md), without going through render."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import requests

from nginxgen.render import lua_string
from nginxgen.util.resources import resource_dir
from tests.helpers import Nginx, free_port, nginx_workers, poll_until, require_nginx, wait_for_port

HERE = Path(__file__).resolve().parent


def needs_lua() -> Any:
    """Skipped without nginx's Lua module; failed under CI=true (see tests/helpers)."""
    import pytest

    return pytest.mark.requires("nginx-lua")


def readable_copy(workdir: Path) -> Path:
    """lua/ and the Lua test files, where nginx's workers (user nobody) can read them."""
    target = workdir / "lua"
    shutil.copytree(resource_dir("lua"), target)
    for f in HERE.glob("*.lua"):
        shutil.copy(f, target / f.name)
    for path in [target, *target.rglob("*")]:
        mode = 0o755 if path.is_dir() else 0o644
        path.chmod(mode)
    workdir.chmod(workdir.stat().st_mode | stat.S_IXOTH | stat.S_IROTH)
    return target


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def upstream(name: str, keepalive: int = 16, key: str | None = None) -> str:
    """A dynamic upstream: placeholder server, the balancer call, its own keepalive pool."""
    arg = f", ngx.var.{key}" if key else ""
    return f"""
    upstream {name} {{
        server 0.0.0.1;
        balancer_by_lua_block {{ require("nginxgen.balancer").balance({lua_string(name)}{arg}) }}
        keepalive {keepalive};
    }}"""


# nginx refuses a string of 4 KB or more inside a *_by_lua_block; lua_string spends up
# to 4 bytes per character (\123 for a brace), so JSON goes in pieces of 1,000.
PLAN_PIECE = 1000


def lua_pieces(text: str) -> str:
    """A Lua list of string literals that concatenate to `text` (ASCII JSON)."""
    pieces = [lua_string(text[i : i + PLAN_PIECE]) for i in range(0, len(text), PLAN_PIECE)]
    return "{" + ", ".join(pieces) + "}"


LOG_HOOK = '    log_by_lua_block { require("nginxgen.balancer").log() }'


def feed_http(
    lua_dir: Path,
    plan: dict[str, Any],
    token: str,
    snapshot: Path | None = None,
    dict_size: str = "8m",
    extra_init: str = "",
    options: dict[str, int | float] | None = None,
    log_hook: bool = True,
) -> str:
    """http-level lines: package path, the two shared dicts, init and init_worker, and
    the balancer's log hook (a location with its own log_by_lua must call it itself)."""
    settings = [f"{k} = {v!r}" for k, v in (options or {}).items()] + [
        f"plan = {lua_pieces(json.dumps(plan))}",
        f"token_sha256 = {lua_string(token_digest(token))}",
    ]
    if snapshot is not None:
        settings.append(f"snapshot = {lua_string(str(snapshot))}")
    return f"""
    lua_package_path "{lua_dir}/?.lua;;";
    lua_shared_dict nginxgen_endpoints {dict_size};
    lua_shared_dict nginxgen_health 1m;
    init_by_lua_block {{
        require("nginxgen.balancer")
        require("nginxgen.endpoints").init({{ {", ".join(settings)} }})
        {extra_init}
    }}
    init_worker_by_lua_block {{ require("nginxgen.endpoints").init_worker() }}
{LOG_HOOK if log_hook else ""}"""


def feed_server(port: int, max_body: str = "32m") -> str:
    """The loopback status listener's two feed locations."""
    return f"""
    server {{
        listen 127.0.0.1:{port};
        access_log off;
        location = /nginxgen/endpoints {{
            allow 127.0.0.0/8;
            allow ::1;
            deny all;
            client_max_body_size {max_body};
            client_body_buffer_size {max_body};
            content_by_lua_block {{ require("nginxgen.endpoints").push() }}
        }}
        location = /nginxgen/endpoints/status {{
            allow 127.0.0.0/8;
            allow ::1;
            deny all;
            content_by_lua_block {{ require("nginxgen.endpoints").status() }}
        }}
    }}"""


def nginx_conf(workdir: Path, http: str, workers: int = 2, log_level: str = "info") -> str:
    modules = require_nginx("lua").load_modules("lua")
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o777)
    return f"""{modules}
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log {log_level};
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
{http}
}}
"""


def peer(port: int, host: str = "127.0.0.1", **fields: Any) -> dict[str, Any]:
    return {"host": host, "port": port, **fields}


class Feed:
    """Client of the feed's two locations, as the sidecar will use them."""

    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}/nginxgen/endpoints"
        self.token = token

    def push(
        self, body: Any, token: str | None = None, raw: bytes | None = None
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(self.base, data=data, headers=headers, timeout=10)

    def status(self, service: str | None = None) -> dict[str, Any]:
        params = {"service": service} if service else None
        r = requests.get(
            self.base + "/status",
            headers={"Authorization": f"Bearer {self.token}"},
            params=params,
            timeout=10,
        )
        r.raise_for_status()
        return r.json()


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise LookupError(pid)


class DynGateway:
    """A hand-written nginx.conf with dynamic upstreams, one location per upstream:
    /NAME/ proxies to upstream NAME and says which peers it tried (X-Upstream)."""

    def __init__(
        self,
        workdir: Path,
        upstreams: dict[str, dict[str, Any]],
        services: dict[str, Any],
        generation: int = 1,
        token: str = "s3cret-token",
        snapshot: Path | None = None,
        workers: int = 2,
        max_body: str = "32m",
        options: dict[str, int | float] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.status_port = free_port()
        self.token = token
        self.lua = readable_copy(workdir) if not (workdir / "lua").exists() else workdir / "lua"
        self.snapshot, self.workers_n, self.max_body, self.options = (
            snapshot,
            workers,
            max_body,
            options,
        )
        self.conf = workdir / "nginx.conf"
        self.write(upstreams, services, generation)
        self.feed = Feed(self.status_port, token)
        self.nginx: Nginx | None = None

    def write(
        self, upstreams: dict[str, dict[str, Any]], services: dict[str, Any], generation: int
    ) -> None:
        """(Re)write nginx.conf for this plan, on the same ports; reload to apply."""
        plan = {"generation": generation, "upstreams": upstreams, "services": services}
        maps, ups, locs = [], [], []
        for name, decl in upstreams.items():
            key = None
            if decl.get("balance") in ("hash", "consistent_hash"):
                key = f"nginxgen_hash_{name}"
                maps.append(f"    map $arg_k ${key} {{ default $arg_k; }}")
            ups.append(upstream(name, key=key))
            locs.append(
                f"""
        location /{name}/ {{
            proxy_pass http://{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            add_header X-Upstream $upstream_addr always;
        }}
        # As a rendered route: nobody to serve is a 503 (balancer.unavailable); -error/
        # is some other 500 nginx makes in such a route.
        location /{name}-page/ {{
            set $nginxgen_service {name};
            error_page 500 = @nginxgen_503;
            proxy_pass http://{name};
        }}
        location /{name}-error/ {{
            set $nginxgen_service {name};
            error_page 500 = @nginxgen_503;
            return 500;
        }}"""
            )
        http = (
            feed_http(self.lua, plan, self.token, snapshot=self.snapshot, options=self.options)
            + "\n".join(maps)
            + "".join(ups)
            + f"""
    server {{
        listen 127.0.0.1:{self.port};
        {"".join(locs)}
        location @nginxgen_503 {{
            content_by_lua_block {{ require("nginxgen.balancer").unavailable() }}
        }}
    }}"""
            + feed_server(self.status_port, max_body=self.max_body)
        )
        self.conf.write_text(nginx_conf(self.workdir, http, workers=self.workers_n))

    def start(self) -> DynGateway:
        self.nginx = Nginx(self.conf, self.workdir / "nginx.pid").start(self.port)
        wait_for_port(self.status_port)
        # A forked worker shows its own title a moment after it answers: tests compare
        # worker PIDs before and after a change, so wait until all of them are seen.
        poll_until(
            lambda: len(self.workers()) >= self.workers_n,
            timeout=10,
            what=f"{self.workers_n} nginx worker(s) to show their title",
        )
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()

    def url(self, name: str, path: str = "x") -> str:
        return f"http://127.0.0.1:{self.port}/{name}/{path}"

    @property
    def master_pid(self) -> int:
        assert self.nginx is not None and self.nginx.proc is not None
        return self.nginx.proc.pid

    def workers(self) -> set[int]:
        return nginx_workers(self.master_pid)

    def error_log(self) -> str:
        log = self.workdir / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def converged(self, generation: int, timeout: float = 5.0) -> float:
        """Seconds until every worker serves `generation`; raises when it does not."""
        start = time.monotonic()
        deadline = start + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.feed.status()
            if last["converged"] and last["generation"] == generation:
                return time.monotonic() - start
            time.sleep(0.005)
        raise AssertionError(f"workers did not converge on {generation}: {last}")
