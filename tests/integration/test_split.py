"""Blue-green and canary through real nginx: weights, sticky keys, rules, mirror, a push."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from nginxgen.deploy.split_state import token
from tests.helpers import free_port, write_spec
from tests.helpers.servers import nginx_workers, settled_workers


def render(spec: Path) -> subprocess.CompletedProcess[str]:
    out = spec.parent / "nginx.conf"
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
    )


def gateway(  # type: ignore[no-untyped-def]
    workdir: Path,
    backends: Any,
    nginx_runner: Any,
    split: dict[str, Any],
    top: dict[str, Any] | None = None,
    **route: Any,
):
    blue, green = backends("blue"), backends("green")
    port, status = free_port(), free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{port}",
                "pid": "nginx.pid",
                "output": "nginx.conf",
                "status_listen": f"127.0.0.1:{status}",
            },
            "routes": [{"path": "/carts/", "service": "carts", **route}],
            "services": {"carts": {"split": split}},
            **(top or {}),
        },
        {
            "carts": [
                {"id": "b1", "address": blue.address, "meta": {"version": "blue"}},
                {"id": "g1", "address": green.address, "tags": ["version=green"]},
            ]
        },
    )
    result = render(spec)
    assert result.returncode == 0, result.stderr
    assert "split blue=" in result.stderr, result.stderr
    nginx = nginx_runner(workdir / "nginx.conf", workdir / "nginx.pid", port)
    return f"http://127.0.0.1:{port}/carts/", status, blue, green, nginx


def test_weights_sticky_keys_and_rules(workdir, backends, nginx_runner):
    url, _, _, _, nginx = gateway(
        workdir,
        backends,
        nginx_runner,
        {
            "weights": {"blue": 90, "green": 10},
            "sticky": "$cookie_session",
            "rules": [
                {"header": "X-Canary", "equals": "1", "to": "green"},
                {"query": "version", "equals": "blue", "to": "blue"},
            ],
        },
    )
    s = requests.Session()
    rng = random.Random(15)
    keys = [f"user-{rng.getrandbits(64):x}" for _ in range(2000)]
    first: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for key in keys:
        r = s.get(url + "x", cookies={"session": key}, timeout=5)
        assert r.status_code == 200
        first[key] = r.headers["X-Backend"]
        seen[first[key]] += 1
    assert abs(seen["green"] / 2000 - 0.10) <= 0.02, seen  # within 2 points of 90/10
    for key in keys[:200]:  # the same key, the same version
        r = s.get(url + "again", cookies={"session": key}, timeout=5)
        assert r.headers["X-Backend"] == first[key], key
    # Rules come first, whatever the key's bucket says.
    blue_key = next(k for k in keys if first[k] == "blue")
    green_key = next(k for k in keys if first[k] == "green")
    r = s.get(url + "r", cookies={"session": blue_key}, headers={"X-Canary": "1"}, timeout=5)
    assert r.headers["X-Backend"] == "green"
    r = s.get(url + "r?version=blue", cookies={"session": green_key}, timeout=5)
    assert r.headers["X-Backend"] == "blue"
    assert "[error]" not in nginx.errors()


def test_mirror_copies_reach_green_and_its_failures_never_reach_the_client(
    workdir, backends, nginx_runner
):
    url, _, blue, green, _ = gateway(
        workdir,
        backends,
        nginx_runner,
        {"weights": {"blue": 100, "green": 0}, "mirror": {"to": "green", "percent": 50}},
    )
    green.status = 500
    green.delay = 0.0
    answers = [requests.get(url + f"m{i}", timeout=5) for i in range(300)]
    assert [r.status_code for r in answers] == [200] * 300
    assert {r.headers["X-Backend"] for r in answers} == {"blue"}
    # A copy may end after the client's answer: let the last ones arrive.
    settled = -1
    while settled != green.count:
        settled = green.count
        time.sleep(0.5)
    copies = [r["path"] for r in green.requests]
    assert 0.35 < len(copies) / 300 < 0.65, len(copies)
    assert all(p.startswith("/carts/m") for p in copies), copies[:5]
    assert blue.count == 300


def test_a_push_shifts_new_requests_without_a_reload(workdir, backends, nginx_runner):
    url, status, _, _, nginx = gateway(
        workdir,
        backends,
        nginx_runner,
        {"weights": {"blue": 100, "green": 0}},
        cors={"origins": ["https://app.test"]},
    )
    master = int((workdir / "nginx.pid").read_text())
    workers = settled_workers(master)
    assert {requests.get(url, timeout=5).headers["X-Backend"] for _ in range(20)} == {"blue"}
    state = json.loads((workdir / "nginxgen-split.json").read_text())
    doc = state["services"]["carts"]
    for v in doc["versions"]:
        v["bps"] = 10000 if v["name"] == "green" else 0
    secret = token_of(workdir)
    push = f"http://127.0.0.1:{status}/nginxgen/split"
    wrong = requests.post(push, json={"services": {"carts": doc}}, timeout=5)
    assert wrong.status_code == 401
    bad = json.loads(json.dumps(doc))
    bad["versions"][0]["bps"] = 5
    r = requests.post(push, json={"services": {"carts": bad}}, headers=secret, timeout=5)
    assert r.status_code == 400 and "add up to 10000" in r.json()["error"]
    r = requests.post(push, json={"services": {"carts": doc}}, headers=secret, timeout=5)
    assert r.status_code == 200, r.text
    assert {requests.get(url, timeout=5).headers["X-Backend"] for _ in range(20)} == {"green"}
    assert int((workdir / "nginx.pid").read_text()) == master
    assert nginx_workers(master) == workers  # no reload: the same workers serve
    shown = requests.get(f"{push}/status", headers=secret, timeout=5).json()
    assert shown["services"]["carts"]["versions"][1]["bps"] == 10000
    # Nobody left in any version: the deliberate 503, as for a service with nobody alive.
    for v in doc["versions"]:
        v["bps"], v["live"] = 0, False
    r = requests.post(push, json={"services": {"carts": doc}}, headers=secret, timeout=5)
    assert r.status_code == 200, r.text
    r = requests.get(url, headers={"Origin": "https://app.test"}, timeout=5)
    assert r.status_code == 503
    assert r.json() == {"error": "service unavailable", "service": "carts"}
    # The route's own page (it has CORS): a browser app can read the 503.
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.test"
    assert "[error]" not in nginx.errors()


def test_a_cached_split_route_with_no_version_answers_the_same_503(
    workdir, backends, nginx_runner, redis_server
):
    # A cached route checks in rewrite_by_lua (split.available), before the cache's access
    # phase: the client sees the 503 the error_page route gives (balancer.answer_503).
    srv = redis_server()
    url, status, _, _, nginx = gateway(
        workdir,
        backends,
        nginx_runner,
        {"weights": {"blue": 100, "green": 0}},
        top={"redis": {"host": "127.0.0.1", "port": srv.port}},
        cache={"ttl": "30s"},
        cors={"origins": ["https://app.test"]},
    )
    assert 'require("nginxgen.split").available("carts")' in (workdir / "nginx.conf").read_text()
    assert requests.get(url, timeout=5).headers["X-Backend"] == "blue"
    doc = json.loads((workdir / "nginxgen-split.json").read_text())["services"]["carts"]
    for v in doc["versions"]:
        v["bps"], v["live"] = 0, False
    push = f"http://127.0.0.1:{status}/nginxgen/split"
    r = requests.post(push, json={"services": {"carts": doc}}, headers=token_of(workdir), timeout=5)
    assert r.status_code == 200, r.text
    r = requests.get(url + "other", headers={"Origin": "https://app.test"}, timeout=5)
    assert r.status_code == 503
    assert r.headers["Content-Type"] == "application/json" and r.headers["Retry-After"] == "5"
    # Answered in the route's own location: its CORS headers are there.
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.test"
    assert r.json() == {"error": "service unavailable", "service": "carts"}
    assert "[error]" not in nginx.errors()


def token_of(workdir: Path) -> dict[str, str]:
    from nginxgen.spec import load_spec

    value = token(load_spec(workdir / "nginxgen.yaml").nginx)
    assert value is not None
    return {"Authorization": f"Bearer {value.decode()}"}


def test_a_split_route_strips_its_prefix_like_any_route(workdir, backends, nginx_runner):
    url, _, blue, _, _ = gateway(
        workdir, backends, nginx_runner, {"weights": {"blue": 100, "green": 0}}, strip_prefix=True
    )
    r = requests.get(url + "items/7?full=1", timeout=5)
    assert r.status_code == 200 and r.headers["X-Backend"] == "blue"
    assert blue.requests[-1]["path"] == "/items/7?full=1"
