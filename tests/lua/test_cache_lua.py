"""Run the Lua unit tests in tests/lua/*_test.lua inside a real nginx (LuaJIT, lua-nginx-module,
lua-resty-core, as in production): one suite per module of lua/nginxgen/cache/."""

from __future__ import annotations

from pathlib import Path

import requests

from nginxgen.util.resources import resource_dir
from tests.helpers import free_port, require_nginx

HERE = Path(__file__).resolve().parent
# The cache suites use harness.lua; the balancer and feed suites run from test_endpoints_lua.py.
SUITES = sorted(p.stem for p in HERE.glob("cache_*_test.lua"))


def lua_server(workdir: Path, preload: str, content: str) -> tuple[Path, int]:
    """An nginx.conf whose master loads `preload` and whose /t runs `content`."""
    port = free_port()
    modules = require_nginx("lua").load_modules("lua")
    temp = "".join(
        f"    {kind}_temp_path {workdir}/tmp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""{modules}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
{temp}
    lua_package_path "{resource_dir("lua")}/?.lua;{HERE}/?.lua;;";
    # Loaded by the master, like production modules: their globals are the real _G.
    init_by_lua_block {{ {preload} }}
    server {{
        listen 127.0.0.1:{port};
        location = /t {{ content_by_lua_block {{ {content} }} }}
    }}
}}
"""
    )
    return conf, port


def test_lua_cache_unit_cases(workdir, nginx_runner):
    assert len(SUITES) >= 4, SUITES
    preload = " ".join(f'require("{s}");' for s in ("nginxgen.cache", *SUITES))
    suites = ", ".join(f'"{s}"' for s in SUITES)
    conf, port = lua_server(workdir, preload, f'require("harness").run({{ {suites} }})')
    nginx = nginx_runner(conf, workdir / "nginx.pid", port)
    out = requests.get(f"http://127.0.0.1:{port}/t", timeout=10).text
    assert out.startswith("ok "), out + nginx.errors()[-2000:]
    assert int(out.split()[1]) >= 25, out  # every case ran


def test_the_harness_fails_a_case_that_writes_a_global(workdir, nginx_runner):
    preload = 'require("harness"); require("global_writer_fixture")'
    conf, port = lua_server(workdir, preload, 'require("harness").run({ "global_writer_fixture" })')
    nginx_runner(conf, workdir / "nginx.pid", port)
    out = requests.get(f"http://127.0.0.1:{port}/t", timeout=10).text
    assert "FAIL global_writer_fixture: leaks: " in out and "writes the global 'leaked'" in out


def test_lua_cache_uses_the_installed_redis_client(workdir, nginx_runner):
    """Debian's nginx.redis here; OpenResty's resty.redis is preferred where it exists."""
    conf, port = lua_server(
        workdir, 'require("nginxgen.cache")', 'ngx.say(require("nginxgen.cache").redis_flavor)'
    )
    nginx_runner(conf, workdir / "nginx.pid", port)
    assert requests.get(f"http://127.0.0.1:{port}/t", timeout=10).text.strip() == "nginx.redis"
