"""Gateway policies end to end: rate limits, API keys, auth_request, metrics, request ids.

Every test renders a spec with the real CLI, starts the real nginx on it and talks to real
backends on loopback ports.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import AuthService, Nginx, free_port, write_spec
from tests.helpers import poll_until as poll

KEYS = ("key-alpha-7f3a91c2", "key-beta-0b55e6d4")


@dataclass
class Gateway:
    url: str
    status_url: str
    conf: Path
    nginx: Nginx


def render(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def gateway(workdir: Path, nginx_runner: Callable[..., Nginx]) -> Callable[..., Gateway]:
    """Factory: gateway(routes, services, **nginx_options) renders and starts nginx."""

    def start(routes: list[dict[str, Any]], services: dict[str, Any], **nginx: Any) -> Gateway:
        port, status_port = free_port(), free_port()
        options = {
            "flavor": "nginx",
            "listen": f"127.0.0.1:{port}",
            "pid": "nginx.pid",
            "status_listen": f"127.0.0.1:{status_port}",
            "metrics": True,
            **nginx,
        }
        spec = write_spec(workdir, {"nginx": options, "routes": routes}, services)
        conf = workdir / "nginx.conf"
        result = render(spec, conf)
        assert result.returncode == 0, result.stderr
        server = nginx_runner(conf, workdir / "nginx.pid", port)
        return Gateway(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{status_port}", conf, server)

    return start


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# --- rate limiting ----------------------------------------------------------------------


def test_burst_beyond_the_limit_gets_429_and_never_reaches_the_backend(gateway, backends):
    app = backends("app")
    gw = gateway(
        # 1r/m: the bucket does not refill during the test, however slow the machine is.
        [{"path": "/api/", "service": "app", "rate_limit": {"rate": "1r/m", "burst": 2}}],
        {"app": [{"id": "a", "address": app.address}]},
    )
    with requests.Session() as s:
        answers = [s.get(f"{gw.url}/api/x", timeout=10) for _ in range(8)]
    assert [r.status_code for r in answers] == [200] * 3 + [429] * 5
    assert app.count == 3  # rejected requests never left the gateway
    refused = answers[-1]
    assert refused.json() == {"error": "too many requests"}
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.headers["Retry-After"] == "60"
    assert refused.headers["X-Request-ID"]


def test_a_header_key_gives_each_tenant_its_own_bucket(gateway, backends):
    app = backends("app")
    gw = gateway(
        [
            {
                "path": "/t/",
                "service": "app",
                "rate_limit": {"rate": "1r/m", "burst": 0, "key": "header:X-Tenant"},
            }
        ],
        {"app": [{"id": "a", "address": app.address}]},
    )

    def status(tenant: str) -> int:
        return requests.get(f"{gw.url}/t/", headers={"X-Tenant": tenant}, timeout=10).status_code

    assert [status("acme"), status("acme")] == [200, 429]
    assert [status("globex"), status("globex")] == [200, 429]
    assert status("acme") == 429
    assert app.count == 2


def test_limit_conn_refuses_a_second_concurrent_request(gateway, backends):
    slow = backends("slow")
    slow.delay = 5.0  # the first request must still be in flight when the second arrives
    gw = gateway(
        [{"path": "/slow/", "service": "slow", "limit_conn": 1}],
        {"slow": [{"id": "s", "address": slow.address}]},
    )
    first: list[requests.Response] = []
    t = threading.Thread(target=lambda: first.append(requests.get(f"{gw.url}/slow/", timeout=20)))
    t.start()
    assert poll(lambda: slow.count == 1)  # the first request is in flight at the backend
    second = requests.get(f"{gw.url}/slow/", timeout=10)
    t.join(30)
    assert first[0].status_code == 200
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "1"
    assert slow.count == 1


# --- authentication ---------------------------------------------------------------------


def test_api_keys_reject_missing_and_wrong_keys_and_pass_valid_ones(gateway, backends, workdir):
    app = backends("app")
    (workdir / "keys.txt").write_text("# clients\n" + "\n".join(KEYS) + "\n")
    gw = gateway(
        [
            {"path": "/private/", "service": "app", "auth": {"api_keys": {"file": "keys.txt"}}},
            {"path": "/open/", "service": "app"},
        ],
        {"app": [{"id": "a", "address": app.address}]},
    )
    url = f"{gw.url}/private/data"
    missing = requests.get(url, timeout=10)
    wrong = requests.get(url, headers={"X-Api-Key": KEYS[0] + "x"}, timeout=10)
    for r in (missing, wrong):
        assert r.status_code == 401
        assert r.json() == {"error": "missing or invalid credentials"}
        assert r.headers["Content-Type"] == "application/json"
    assert app.count == 0

    for key in KEYS:
        r = requests.get(url, headers={"X-Api-Key": key}, timeout=10)
        assert r.status_code == 200, r.text
    assert app.count == 2
    assert all("X-Api-Key" not in req["headers"] for req in app.requests)  # kept at the gateway
    assert requests.get(f"{gw.url}/open/x", timeout=10).status_code == 200  # no auth: open

    text = gw.conf.read_text()
    assert not any(key in text for key in KEYS)  # only digests are rendered
    assert not any(key in gw.nginx.errors() for key in KEYS)


@pytest.fixture
def auth_service() -> Iterator[AuthService]:
    """Bearer good → 200 + X-User-Id: u-42, bad → 403, else 401."""
    service = AuthService({"good": "u-42"}, forbidden={"bad"})
    yield service
    service.stop()


def test_auth_request_allows_denies_and_forwards_the_user(gateway, backends, auth_service):
    app = backends("app")
    gw = gateway(
        [
            {
                "path": "/sso/",
                "service": "app",
                "auth": {"url": auth_service.url, "forward_headers": ["X-User-Id"]},
            }
        ],
        {"app": [{"id": "a", "address": app.address}]},
    )
    url = f"{gw.url}/sso/orders?page=2"
    nobody = requests.get(url, timeout=10)
    assert nobody.status_code == 401
    assert nobody.json() == {"error": "missing or invalid credentials"}
    denied = requests.get(url, headers={"Authorization": "Bearer bad"}, timeout=10)
    assert denied.status_code == 403
    assert denied.json() == {"error": "forbidden"}
    assert app.count == 0

    # A client cannot claim to be someone: the header comes from the auth service only.
    ok = requests.post(
        url, headers={"Authorization": "Bearer good", "X-User-Id": "admin"}, data=b"x", timeout=10
    )
    assert ok.status_code == 200
    assert app.count == 1
    assert app.requests[0]["headers"]["X-User-Id"] == "u-42"
    check = auth_service.seen[-1]
    assert check["x-original-method"] == "POST"
    assert check["x-original-uri"] == "/sso/orders?page=2"
    assert check["path"] == "/verify"


# --- monitoring -------------------------------------------------------------------------


def test_metrics_count_what_was_sent_and_stay_off_the_public_listener(gateway, backends):
    app = backends("app")
    app.extra_headers = {"X-Cache": "HIT"}  # a backend's word is not the gateway's cache
    gw = gateway(
        [
            {"path": "/api/", "service": "app"},
            {"path": "/limited/", "service": "app", "rate_limit": {"rate": "1r/m", "burst": 1}},
        ],
        {"app": [{"id": "a", "address": app.address}]},
    )
    with requests.Session() as s:
        for _ in range(7):
            assert s.get(f"{gw.url}/api/x", timeout=10).status_code == 200
        for _ in range(3):
            assert s.get(f"{gw.url}/nowhere", timeout=10).status_code == 404
        limited = [s.get(f"{gw.url}/limited/", timeout=10).status_code for _ in range(5)]
    assert limited == [200, 200, 429, 429, 429]

    def scrape() -> str | None:
        text = requests.get(f"{gw.status_url}/metrics", timeout=10).text
        # Counted in the log phase, after each answer went out: wait for the last ones.
        done = (
            metric(text, "nginxgen_requests_total", route="/limited/", status="4xx") == 3
            and metric(text, "nginxgen_requests_total", route="/api/", status="2xx") == 7
            and metric(text, "nginxgen_requests_total", route="-", status="4xx") == 3
        )
        return text if done else None

    text = poll(scrape)
    assert text, requests.get(f"{gw.status_url}/metrics", timeout=10).text
    # The rendered route table gives each route its service, and each peer too.
    assert metric(text, "nginxgen_requests_total", route="/api/", service="app", status="2xx") == 7
    peer = metric(text, "nginxgen_upstream_requests_total", service="app", peer=app.address)
    assert peer == 7 + 2 == app.count  # /api/ and the two /limited/ let through
    assert metric(text, "nginxgen_requests_total", route="-", status="4xx") == 3
    assert metric(text, "nginxgen_requests_total", route="/limited/", status="2xx") == 2
    assert metric(text, "nginxgen_rate_limited_total", route="/limited/") == 3
    assert metric(text, "nginxgen_rate_limited_total", route="/api/") == 0
    assert metric(text, "nginxgen_cache_total", route="/api/") == 0
    assert metric(text, "nginxgen_upstream_response_seconds_count", route="/api/") == 7
    assert metric(text, "nginxgen_upstream_response_seconds_bucket", route="/api/", le="+Inf") == 7
    assert "# TYPE nginxgen_upstream_response_seconds histogram" in text

    # The hook read all of that from the one map variable the template renders: its
    # value is the record metrics.lua parses (a drift would count through the slow path);
    # behind the Lua balancer (the default), the one without the peer's address.
    lua = (Path(__file__).parents[2] / "lua" / "nginxgen" / "metrics.lua").read_text()
    record = re.search(r'^_M\.BALANCED_RECORD = "(.*)"$', lua, re.M)
    conf = gw.conf.read_text()
    assert "balancer_by_lua_block" in conf
    assert record and f'default "{record.group(1)}";' in conf

    status = requests.get(f"{gw.status_url}/nginx_status", timeout=10)
    assert status.status_code == 200 and "Active connections" in status.text
    # The public listener knows nothing of either endpoint.
    for path in ("/metrics", "/nginx_status"):
        assert requests.get(f"{gw.url}{path}", timeout=10).status_code == 404
    assert not any(r["path"] in ("/metrics", "/nginx_status") for r in app.requests)


def test_json_access_log_names_route_and_upstream(gateway, backends, workdir):
    app = backends("app")
    gw = gateway(
        [{"path": "/api/", "service": "app"}],
        {"app": [{"id": "a", "address": app.address}]},
        access_log="access.log",
        access_log_format="json",
    )
    requests.get(f"{gw.url}/api/x", headers={"X-Request-ID": "trace-1"}, timeout=10)
    log = workdir / "access.log"
    lines = poll(lambda: log.exists() and log.read_text().splitlines())
    entry = json.loads(lines[-1])
    assert entry["route"] == "/api/"
    assert entry["upstream_addr"] == app.address
    assert entry["upstream_status"] == "200"
    assert entry["status"] == 200
    assert entry["request_id"] == "trace-1"
    assert isinstance(entry["request_time"], float)
    assert float(entry["upstream_response_time"]) >= 0


# --- request hygiene --------------------------------------------------------------------


def test_request_id_is_generated_when_missing_and_kept_when_sent(gateway, backends):
    app = backends("app")
    gw = gateway(
        [{"path": "/api/", "service": "app"}, {"path": "/gone/", "service": "nobody"}],
        {
            "app": [{"id": "a", "address": app.address}],
            "nobody": [{"id": "n", "address": "127.0.0.1:1", "state": "down"}],
        },
    )
    fresh = requests.get(f"{gw.url}/api/x", timeout=10)
    rid = fresh.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert app.requests[-1]["headers"]["X-Request-ID"] == rid

    kept = requests.get(f"{gw.url}/api/x", headers={"X-Request-ID": "abc-123"}, timeout=10)
    assert kept.headers["X-Request-ID"] == "abc-123"
    assert app.requests[-1]["headers"]["X-Request-ID"] == "abc-123"

    # Something that is not a sane id is replaced rather than passed along.
    odd = requests.get(f"{gw.url}/api/x", headers={"X-Request-ID": 'a b"c'}, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-ID"])

    for path in ("/gone/x", "/nowhere"):  # answers nginx makes itself carry it too
        assert requests.get(f"{gw.url}{path}", timeout=10).headers.get("X-Request-ID")
    assert "Server" not in fresh.headers or "nginx/" not in fresh.headers["Server"]


def test_client_body_limit_applies_per_route(gateway, backends):
    app = backends("app")
    gw = gateway(
        [
            {"path": "/small/", "service": "app", "client_max_body_size": "1k"},
            {"path": "/big/", "service": "app"},
        ],
        {"app": [{"id": "a", "address": app.address}]},
    )
    body = b"x" * 4096
    assert requests.post(f"{gw.url}/small/", data=body, timeout=10).status_code == 413
    assert requests.post(f"{gw.url}/big/", data=body, timeout=10).status_code == 200
    assert [r["path"] for r in app.requests] == ["/big/"]
