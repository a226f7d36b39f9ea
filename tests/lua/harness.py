"""Hand-written nginx.conf pieces for the Lua tests: the dynamic upstream feed as the
Python side will render it (docs/endpoints-feed.md), without going through render."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import requests

from nginxgen.nginx_bin import lua_modules
from nginxgen.render import lua_string
from nginxgen.resources import resource_dir
from nginxgen.spec import NginxSpec

HERE = Path(__file__).resolve().parent
LUA_MODULE = Path("/usr/lib/nginx/modules/ngx_http_lua_module.so")


def needs_lua() -> Any:
    import pytest

    if os.environ.get("CI") == "true":
        return pytest.mark.usefixtures()  # under CI a missing module must fail, not skip
    return pytest.mark.skipif(
        not LUA_MODULE.exists(), reason="needs nginx with the Lua module (libnginx-mod-http-lua)"
    )


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


def feed_http(
    lua_dir: Path,
    plan: dict[str, Any],
    token: str,
    snapshot: Path | None = None,
    dict_size: str = "8m",
    extra_init: str = "",
) -> str:
    """http-level lines: package path, the two shared dicts, init and init_worker."""
    settings = [
        f"plan = {lua_string(json.dumps(plan))}",
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
    log_by_lua_block {{ require("nginxgen.balancer").log() }}"""


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


def nginx_conf(workdir: Path, http: str, workers: int = 2) -> str:
    modules = "".join(f"load_module {m};\n" for m in lua_modules(NginxSpec(flavor="nginx")))
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o777)
    return f"""{modules}
worker_processes {workers};
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
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

    def push(self, body: Any, token: str | None = None, raw: bytes | None = None) -> requests.Response:
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
