"""Run tests/lua/cache_test.lua inside a real nginx: the pure parts of lua/nginxgen/cache.lua."""

from __future__ import annotations

from pathlib import Path

import requests

from nginxgen.resources import resource_dir
from tests.conftest import free_port
from tests.helpers import require_nginx

HERE = Path(__file__).resolve().parent


def test_lua_cache_unit_cases(workdir, nginx_runner):
    port = free_port()
    modules = require_nginx("lua").load_modules("lua")
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{modules}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/tmp;
    proxy_temp_path {workdir}/tmp;
    fastcgi_temp_path {workdir}/tmp;
    uwsgi_temp_path {workdir}/tmp;
    scgi_temp_path {workdir}/tmp;
    lua_package_path "{resource_dir("lua")}/?.lua;{HERE}/?.lua;;";
    init_by_lua_block {{ require("nginxgen.cache"); require("cache_test") }}
    server {{
        listen 127.0.0.1:{port};
        location = /t {{ content_by_lua_block {{ require("cache_test").run() }} }}
    }}
}}
"""
    )
    nginx = nginx_runner(conf, workdir / "nginx.pid", port)
    out = requests.get(f"http://127.0.0.1:{port}/t", timeout=10).text
    assert out.startswith("ok "), out + nginx.errors()[-2000:]
    assert "redis client: nginx.redis" in out  # Debian's; OpenResty would say resty.redis
