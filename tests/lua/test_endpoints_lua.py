"""Run the Lua unit suites of the dynamic upstream modules inside a real nginx.

Each *_test.lua suite answers "ok <n>" or one "FAIL <case>: <why>" line per failing case;
every case runs with _G locked (tests/lua/testing.lua), so a global write fails it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import Nginx, free_port, world_readable_dir
from tests.lua.harness import needs_lua, nginx_conf, readable_copy

SUITES = ("ip", "schema", "store", "pool", "health", "feed", "endpoints")

pytestmark = needs_lua()


@pytest.fixture(scope="module")
def unit_nginx() -> Iterator[tuple[int, Nginx]]:
    workdir = world_readable_dir("nginxgen-lua-unit-")
    lua = readable_copy(workdir)
    port = free_port()
    locations = "\n".join(
        f'        location = /t/{s} {{ content_by_lua_block {{ require("{s}_test").run() }} }}'
        for s in SUITES
    )
    conf = workdir / "nginx.conf"
    conf.write_text(
        nginx_conf(
            workdir,
            f"""
    lua_package_path "{lua}/?.lua;;";
    lua_shared_dict nginxgen_endpoints 1m;
    lua_shared_dict nginxgen_health 1m;
    init_by_lua_block {{ require("testing") }}
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}""",
            workers=1,
        )
    )
    nginx = Nginx(conf, workdir / "nginx.pid").start(port)
    yield port, nginx
    nginx.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("suite", SUITES)
def test_lua_suite(unit_nginx: tuple[int, Nginx], suite: str) -> None:
    port, nginx = unit_nginx
    r = requests.get(f"http://127.0.0.1:{port}/t/{suite}", timeout=60)
    log = Path(nginx.conf.parent / "error.log")
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{tail}"
    assert r.text.startswith("ok "), r.text + "\n" + tail
