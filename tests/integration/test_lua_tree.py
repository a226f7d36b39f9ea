"""The two-container layout: nginx sees only the config's directory, never nginxgen's files.

`render -o` installs the Lua modules the config needs next to it; nginx started in a
mount namespace where the package's own Lua directory is an empty tmpfs still serves
metrics, the Redis cache and API keys, with its workers running as `nobody`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from nginxgen.deploy.lua_tree import LUA_TREE, lua_tree_dir
from nginxgen.util.resources import resource_dir
from tests.helpers import Nginx, RedisServer, free_port, write_spec
from tests.helpers.components import require_component, skip_or_fail

KEY = "key-alpha-7f3a91c2"


def hidden_lua_nginx(directory: Path) -> Path:
    """A wrapper that execs nginx where the package's lua/ directory looks empty."""
    found = shutil.which("unshare")
    if os.geteuid() != 0 or found is None:
        skip_or_fail("needs root and unshare(1) to hide the package's Lua files from nginx")
    require_component("nginx")
    from tests.helpers import find_nginx

    binary = find_nginx()
    assert binary is not None
    wrapper = directory / "nginx-without-package-lua"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'exec {found} -m sh -c \'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"\' '
        f'{resource_dir("lua")} {binary.path} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def test_rendered_dir_alone_serves_metrics_cache_and_api_keys(
    workdir: Path, backends: Callable[..., object], redis_server: Callable[..., RedisServer]
) -> None:
    wrapper = hidden_lua_nginx(workdir)
    app = backends("app", echo=True)
    redis = redis_server()
    port, status_port = free_port(), free_port()
    (workdir / "keys.txt").write_text(KEY + "\n")
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{port}",
                "pid": "conf/nginx.pid",
                "status_listen": f"127.0.0.1:{status_port}",
                "metrics": True,
            },
            "redis": {"host": "127.0.0.1", "port": redis.port},
            "routes": [
                {"path": "/c/", "service": "app", "cache": {"ttl": "30s"}},
                {"path": "/private/", "service": "app", "auth": {"api_keys": {"file": "keys.txt"}}},
            ],
        },
        {"app": [{"id": "app-1", "address": app.address}]},  # type: ignore[attr-defined]
    )
    confdir = workdir / "conf"
    confdir.mkdir(mode=0o755)
    conf = confdir / "nginx.conf"
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(conf)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    tree = lua_tree_dir(confdir)
    assert (tree / "nginxgen" / "metrics.lua").is_file()
    assert f"{tree}/?.lua;;" in conf.read_text()
    assert str(resource_dir("lua")) not in conf.read_text()

    # The control: the same config naming the package's own Lua files does not start there
    # (nginx -t passes it: init_by_lua does not run under -t).
    control = confdir / "package-lua.conf"
    control.write_text(conf.read_text().replace(str(tree), str(resource_dir("lua"))))
    refused = subprocess.run(
        [str(wrapper), "-c", str(control), "-e", "stderr", "-g", "daemon off;"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "module 'nginxgen." in refused.stderr

    nginx = Nginx(conf, confdir / "nginx.pid", binary=str(wrapper)).start(port)
    try:
        url = f"http://127.0.0.1:{port}"
        first = requests.get(f"{url}/c/item", timeout=10)
        again = requests.get(f"{url}/c/item", timeout=10)
        assert first.status_code == 200, nginx.errors()[-2000:]
        assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
        assert requests.get(f"{url}/private/x", timeout=10).status_code == 401
        ok = requests.get(f"{url}/private/x", headers={"X-Api-Key": KEY}, timeout=10)
        assert ok.status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{status_port}/metrics", timeout=10)
        assert metrics.status_code == 200 and "nginxgen_" in metrics.text
        assert "not found" not in nginx.errors()
    finally:
        nginx.stop()


def test_a_second_render_reuses_the_tree_and_an_upgrade_prunes_old_ones(tmp_path: Path) -> None:
    from nginxgen.deploy.lua_tree import install_lua

    first = install_lua(tmp_path)
    assert install_lua(tmp_path) == first
    assert oct(first.stat().st_mode & 0o777) == "0o755"
    root = tmp_path / LUA_TREE
    for i in range(5):  # trees older versions left
        old = root / f"0.0.{i}-old"
        old.mkdir()
        os.utime(old, (1000 + i, 1000 + i))
    shutil.rmtree(first)
    again = install_lua(tmp_path)
    left = sorted(p.name for p in root.iterdir())
    assert again.name in left and "0.0.4-old" in left and "0.0.3-old" in left
    assert len(left) == 3
