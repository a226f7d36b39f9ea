"""Run every Lua unit suite (tests/lua/*_test.lua) inside a real nginx: LuaJIT,
lua-nginx-module and lua-resty-core, as in production.

One nginx serves /t/<suite> for each suite; harness.lua's run_suite loads the suite (and
the modules it requires) and runs each case with _G locked, then answers "ok <n>" or one
"FAIL <suite>: <case>: <why>" line per failing case.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import Nginx, free_port, world_readable_dir
from tests.lua.harness import needs_lua, nginx_conf, readable_copy

HERE = Path(__file__).resolve().parent
SUITES = sorted(p.stem for p in HERE.glob("*_test.lua"))

pytestmark = needs_lua()


@pytest.fixture(scope="module")
def lua_nginx() -> Iterator[tuple[int, Nginx]]:
    workdir = world_readable_dir("nginxgen-lua-unit-")
    lua = readable_copy(workdir)  # where the workers (user nobody) can read the suites
    port = free_port()
    locations = "\n".join(
        f'        location = /t/{name} {{ content_by_lua_block {{ require("harness")'
        f'.run_suite("{name}") }} }}'
        for name in (*SUITES, "global_writer_fixture")
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        nginx_conf(
            workdir,
            f"""
    lua_package_path "{lua}/?.lua;;";
    lua_shared_dict nginxgen_endpoints 1m;
    lua_shared_dict nginxgen_health 1m;
    lua_shared_dict nginxgen_metrics 1m;
    lua_shared_dict nginxgen_split 1m;
    init_by_lua_block {{ require("harness") }}
    server {{
        listen 127.0.0.1:{port};
{locations}
        location = /redis_flavor {{
            content_by_lua_block {{ ngx.say(require("nginxgen.cache").redis_flavor) }}
        }}
    }}""",
            workers=1,
        )
    )
    nginx = Nginx(conf, workdir / "nginx.pid").start(port)
    yield port, nginx
    nginx.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def run(lua_nginx: tuple[int, Nginx], path: str) -> str:
    port, _ = lua_nginx
    r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=60)
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{error_log(lua_nginx)}"
    return r.text


def error_log(lua_nginx: tuple[int, Nginx]) -> str:
    log = lua_nginx[1].conf.parent / "error.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def test_every_module_has_its_suite():
    assert len(SUITES) >= 11, SUITES
    assert {"cache_key_test", "pool_test", "endpoints_test", "metrics_test"} <= set(SUITES)


@pytest.mark.parametrize("suite", SUITES)
def test_lua_suite(lua_nginx: tuple[int, Nginx], suite: str) -> None:
    out = run(lua_nginx, f"/t/{suite}")
    assert out.startswith("ok "), out + "\n" + error_log(lua_nginx)
    assert int(out.split()[1]) > 0, out  # a suite with no case proves nothing


def test_the_harness_fails_a_case_that_writes_a_global(lua_nginx):
    out = run(lua_nginx, "/t/global_writer_fixture")
    assert "FAIL global_writer_fixture: leaks: " in out and "global write: leaked" in out


def test_lua_cache_uses_the_installed_redis_client(lua_nginx):
    """Debian's nginx.redis here; OpenResty's resty.redis is preferred where it exists."""
    assert run(lua_nginx, "/redis_flavor").strip() == "nginx.redis"
