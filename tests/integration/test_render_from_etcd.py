"""etcd end to end: instances registered in etcd → `nginxgen render` → real nginx → backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.helpers import free_port, who_answers


def nginxgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", *args], capture_output=True, text=True, timeout=60
    )


def write_etcd_spec(directory: Path, etcd_url: str, port: int) -> Path:
    spec = {
        "registry": {"kind": "etcd", "url": etcd_url, "prefix": "/services/"},
        "nginx": {
            "flavor": "nginx",
            "listen": f"127.0.0.1:{port}",
            "pid": "nginx.pid",
            "status_listen": f"127.0.0.1:{free_port()}",
        },
        "routes": [
            {"path": "/api/", "service": "api"},
            {"path": "/gone/", "service": "gone"},
        ],
    }
    path = directory / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_backends_registered_in_etcd_get_the_traffic(etcd_server, workdir, backends, nginx_runner):
    a, b = backends("a"), backends("b")
    etcd_server.ctl("put", "/services/api/a", json.dumps({"address": a.address, "weight": 1}))
    etcd_server.ctl("put", "/services/api/b", json.dumps({"host": "127.0.0.1", "port": b.port}))
    etcd_server.ctl("put", "/services/api/evil", json.dumps({"address": "127.0.0.1:1;return 418"}))
    port = free_port()
    spec = write_etcd_spec(workdir, etcd_server.url, port)
    conf = workdir / "nginx.conf"

    result = nginxgen("render", "-c", str(spec), "-o", str(conf))
    assert result.returncode == 0, result.stderr
    assert "'evil'" in result.stderr and "dropped" in result.stderr
    assert "return 418" not in conf.read_text()
    nginx_runner(conf, workdir / "nginx.pid", port)
    assert set(who_answers(f"http://127.0.0.1:{port}/api/x", 20)) == {"a", "b"}
    r = requests.get(f"http://127.0.0.1:{port}/gone/x", timeout=5)
    assert r.status_code == 503  # a route whose service is not in etcd answers 503

    # `nginxgen services` shows the same view: a table for people, JSON for machines.
    listing = nginxgen("services", "-c", str(spec), "--json")
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    assert {i["id"] for i in data["services"]["api"]} == {"a", "b"}
    assert data["dropped"][0]["instance"] == "evil"
    assert "dropped:" in listing.stderr and "evil" in listing.stderr
    table = nginxgen("services", "-c", str(spec))
    assert table.returncode == 0 and a.address in table.stdout


def test_registry_down_fails_render_and_services_with_exit_1(workdir):
    port = free_port()
    spec = write_etcd_spec(workdir, f"http://127.0.0.1:{free_port()}", port)
    out = workdir / "nginx.conf"
    out.write_text("# the running config\n")
    for args in (("render", "-c", str(spec), "-o", str(out)), ("services", "-c", str(spec))):
        result = nginxgen(*args)
        assert result.returncode == 1, result
        assert "connection refused" in result.stderr
        assert "Traceback" not in result.stderr
    assert out.read_text() == "# the running config\n"


def test_spec_error_is_exit_2(workdir):
    spec = workdir / "nginxgen.yaml"
    spec.write_text("registry: {kind: etcd, url: 'ftp://x'}\nroutes: [{path: /, service: a}]\n")
    result = nginxgen("services", "-c", str(spec))
    assert result.returncode == 2
    assert "registry.url" in result.stderr and "http://" in result.stderr
