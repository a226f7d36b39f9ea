"""nginxgen.metrics inside real nginx: counts through real routes, workers, reloads, the
Redis cache and the endpoint feed, read back from /metrics with prometheus_client's
parser. (The Lua unit suite, metrics_test.lua, runs with the others: test_lua_suites.py.)"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import (
    Backend,
    Nginx,
    free_port,
    nginx_workers,
    poll_until,
    wait_for_port,
    world_readable_dir,
)
from tests.lua.harness import Feed, needs_lua, nginx_conf, peer, readable_copy
from tests.lua.metrics_harness import (
    API_KEY,
    OLD_METRICS_MAP,
    ROUTE_KEYED_MAP,
    MetricsGateway,
    Route,
    Scrape,
    dynamic_http,
    dynamic_status_server,
    send,
)

pytestmark = needs_lua()


# --- real nginx ---------------------------------------------------------------------------


@pytest.fixture
def mgw(workdir: Path, backends: Callable[..., Backend]) -> Iterator[Callable[..., MetricsGateway]]:
    started: list[MetricsGateway] = []

    def start(peers: list[str], **kwargs: object) -> MetricsGateway:
        auth = backends("auth")
        gw = MetricsGateway(workdir, peers, auth.address, **kwargs).start()  # type: ignore[arg-type]
        gw.auth = auth  # type: ignore[attr-defined]
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def total(s: Scrape) -> float:
    return s.value("nginxgen_requests_total")


@pytest.mark.parametrize(
    "record",
    [True, ROUTE_KEYED_MAP, OLD_METRICS_MAP, False],
    ids=["one-map-variable", "route-keyed-map", "map-rendered-before", "no-map"],
)
def test_counters_equal_the_requests_sent_across_two_workers(mgw, backends, record):
    """Every way the hook reads a request: the $nginxgen_metrics map; the maps of configs
    rendered before (keyed by the route; status and duration in it too); and without it
    (a config rendered before the map existed) ngx.var one field at a time."""
    a, b = backends("a"), backends("b")
    gw = mgw([a.address, b.address], record=record)
    auth: Backend = gw.auth
    sent: dict[tuple[str, str], int] = {}

    def go(route: str, path: str, n: int, want: int, **kw: object) -> None:
        statuses = send(gw.url(path), n, **kw)  # type: ignore[arg-type]
        assert statuses == [want] * n, (path, statuses)
        key = (route, f"{want // 100}xx")
        sent[key] = sent.get(key, 0) + n

    go("/api/", "/api/x", 60, 200)
    go("/api/", "/api/y", 40, 200, session=False)  # new connections: both workers take some
    go("=/exact", "/exact", 5, 200)
    limited = send(gw.url("/limited/"), 5)
    assert limited == [200, 200, 429, 429, 429]
    sent[("/limited/", "2xx")], sent[("/limited/", "4xx")] = 2, 3
    go("/keyed/", "/keyed/", 3, 401)
    go("/keyed/", "/keyed/", 2, 200, headers={"X-Api-Key": API_KEY})
    go("/sso/", "/sso/", 2, 200)
    auth.status = 401
    go("/sso/", "/sso/", 1, 401)
    auth.status = 403
    go("/sso/", "/sso/", 1, 403)
    go("/gone/", "/gone/", 3, 503)
    go("-", "/nowhere", 3, 404)
    go("/v/", "/v/", 3, 200, headers={"X-Version": "blue"})
    go("/v/", "/v/", 2, 200, headers={"X-Version": "green"})
    go("/v/", "/v/", 1, 200)
    n = sum(sent.values())

    s = gw.scrape_until(lambda s: total(s) >= n)
    assert total(s) == n, s.text
    # Nothing more arrives later: every count was flushed exactly once.
    time.sleep(gw.interval * 4)
    s = gw.scrape()
    assert total(s) == n
    for (route, status), count in sent.items():
        assert s.value("nginxgen_requests_total", route=route, status=status) == count, (
            route,
            status,
        )
    assert s.value("nginxgen_requests_total", route="/api/", service="app") == 100
    assert s.value("nginxgen_requests_total", route="/gone/", service="nobody") == 3
    assert s.value("nginxgen_requests_total", route="/v/", version="blue") == 3
    assert s.value("nginxgen_requests_total", route="/v/", version="green") == 2
    assert s.value("nginxgen_requests_total", route="/v/", version="default") == 1
    assert s.value("nginxgen_requests_total", route="/api/", version="default") == 100

    assert s.value("nginxgen_request_duration_seconds_count") == n
    assert s.value("nginxgen_request_duration_seconds_bucket", le="+Inf") == n
    proxied = n - 3 - 3 - 3 - 3 - 1 - 1  # refusals, 503s and 404s never reach a peer
    assert s.value("nginxgen_upstream_response_seconds_count") == proxied
    peers = {x.labels["peer"] for x in s.samples if x.name == "nginxgen_upstream_requests_total"}
    assert peers == {a.address, b.address}
    assert s.value("nginxgen_upstream_requests_total", service="app") == proxied
    assert s.value("nginxgen_upstream_requests_total", peer=a.address) == a.count
    assert s.value("nginxgen_upstream_requests_total", peer=b.address) == b.count

    assert s.value("nginxgen_rate_limited_total", route="/limited/") == 3
    assert s.value("nginxgen_rate_limited_total", route="/api/") == 0
    assert s.value("nginxgen_auth_refused_total", route="/keyed/", status="401") == 3
    assert s.value("nginxgen_auth_refused_total", route="/sso/", status="401") == 1
    assert s.value("nginxgen_auth_refused_total", route="/sso/", status="403") == 1

    # The text format: HELP and TYPE for every family, counters end in _total.
    for line in s.text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line
    for family in ("nginxgen_requests_total", "nginxgen_request_duration_seconds"):
        assert f"# HELP {family} " in s.text and f"# TYPE {family} " in s.text
    assert s.value("nginxgen_connections", state="active") >= 1
    log = gw.error_log()
    assert "nginxgen metrics" not in log and "runtime error" not in log, log[-2000:]


def test_both_workers_count(mgw, backends):
    """New connections until both workers have answered some: /metrics counts them all."""
    a = backends("a")
    gw = mgw([a.address])
    pids: set[str] = set()
    n = 0
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        r = requests.get(gw.url("/api/pid"), timeout=10, headers={"Connection": "close"})
        assert r.status_code == 200
        pids.add(r.headers["X-Worker"])
        n += 1
    assert len(pids) == 2, "every request went to one worker"
    s = gw.scrape_until(lambda s: total(s) >= n)
    assert total(s) == n


def test_a_worker_that_exits_flushes_what_it_counted(mgw, backends):
    """A reload (HUP) replaces the workers: their last counts reach the dict at exit,
    with no periodic flush in between (interval 60 s), and the dict keeps them."""
    a = backends("a")
    gw = mgw([a.address], interval=60)
    send(gw.url("/api/x"), 30)
    send(gw.url("/api/x"), 20, session=False)
    old = gw.workers()
    assert gw.nginx is not None
    gw.nginx.reload()
    poll_until(lambda: not (gw.workers() & old), timeout=20, what="the old workers to exit")
    s = gw.scrape()
    assert s.value("nginxgen_requests_total", route="/api/", status="2xx") == 50, s.text
    assert s.value("nginxgen_upstream_requests_total", peer=a.address) == 50


def test_cache_hits_misses_and_bypasses(mgw, backends, redis_server):
    redis = redis_server()
    a = backends("a")
    gw = mgw([a.address], redis_port=redis.port)
    with requests.Session() as s:
        caches = [s.get(gw.url("/c/x"), timeout=10).headers.get("X-Cache") for _ in range(5)]
        bypass = s.get(gw.url("/c/x"), headers={"Authorization": "Bearer x"}, timeout=10)
    assert caches == ["MISS"] + ["HIT"] * 4
    assert bypass.headers.get("X-Cache") == "BYPASS"
    scrape = gw.scrape_until(lambda s: s.value("nginxgen_cache_total") >= 6)
    assert scrape.value("nginxgen_cache_total", route="/c/", result="hit") == 4
    assert scrape.value("nginxgen_cache_total", route="/c/", result="miss") == 1
    assert scrape.value("nginxgen_cache_total", route="/c/", result="bypass") == 1
    assert scrape.value("nginxgen_requests_total", route="/c/", status="2xx") == 6
    assert scrape.value("nginxgen_upstream_requests_total", peer=a.address) == a.count == 2
    assert scrape.value("nginxgen_cache_total", route="/api/") == 0


def test_label_values_stay_bounded_whatever_clients_send(mgw, backends):
    """Client input never becomes a label: URIs are not labels, and even a version
    taken from a header (the test location does that) is capped at max_versions."""
    a = backends("a")
    gw = mgw([a.address], options={"max_versions": 3})
    with requests.Session() as s:
        for i in range(20):
            assert s.get(gw.url(f"/nowhere/{i}?q={i}"), timeout=10).status_code == 404
            assert s.get(gw.url("/v/"), headers={"X-Version": f"v{i}"}, timeout=10).ok
    scrape = gw.scrape_until(lambda s: total(s) >= 40)
    versions = {
        x.labels["version"]
        for x in scrape.samples
        if x.name == "nginxgen_requests_total" and x.labels["route"] == "/v/"
    }
    assert versions == {"v0", "v1", "v2", "other"}
    assert scrape.value("nginxgen_requests_total", route="/v/", version="other") == 17
    routes = {x.labels["route"] for x in scrape.samples if x.name == "nginxgen_requests_total"}
    assert routes == {"-", "/v/"}
    assert "/nowhere" not in scrape.text


def test_dynamic_upstreams_report_peers_and_the_generation_each_worker_serves(backends):
    """Behind the Lua balancer the hook takes the peer from the balancer's log hook; a
    request that tried a dead peer first counts both attempts, as $upstream_addr has them."""
    a, b = backends("a"), backends("b")
    dead = free_port()  # nothing listens: each attempt fails and is retried
    workdir = world_readable_dir("nginxgen-metrics-dyn-")
    port, status_port, token = free_port(), free_port(), "metrics-token"
    routes = [Route("/app/", "app")]
    plan = {
        "generation": 1,
        "upstreams": {"app": {}},
        "services": {"app": {"peers": [peer(a.port)]}},
    }
    lua = readable_copy(workdir)
    conf = workdir / "nginx.conf"
    http = dynamic_http(lua, plan, token, routes, port) + dynamic_status_server(status_port)
    conf.write_text(nginx_conf(workdir, http, workers=2, log_level="warn"))
    nginx = Nginx(conf, workdir / "nginx.pid").start(port)
    try:
        wait_for_port(status_port)
        poll_until(lambda: len(nginx_workers(nginx.proc.pid)) >= 2, timeout=10, what="workers")
        feed = Feed(status_port, token)
        peers = [peer(a.port), peer(b.port), peer(dead, max_fails=0)]  # never out
        assert feed.push({"generation": 7, "services": {"app": {"peers": peers}}}).ok
        poll_until(lambda: feed.status()["converged"], timeout=10, what="convergence")
        url = f"http://127.0.0.1:{port}/app/x"
        assert send(url, 40) == [200] * 40

        def scrape() -> Scrape:
            r = requests.get(f"http://127.0.0.1:{status_port}/metrics", timeout=10)
            return Scrape.of(r.text)

        def done() -> Scrape | None:
            s = scrape()
            gens = [x for x in s.samples if x.name == "nginxgen_endpoints_generation"]
            ok = len(gens) == 2 and all(g.value == 7 for g in gens) and total(s) == 40
            return s if ok and s.value("nginxgen_upstream_requests_total") > 40 else None

        s = poll_until(done, timeout=15, what="generation 7 on both workers and 40 requests")
        assert {
            g.labels["worker"] for g in s.samples if g.name == "nginxgen_endpoints_generation"
        } == {"0", "1"}
        assert s.value("nginxgen_upstream_requests_total", peer=a.address) == a.count
        assert s.value("nginxgen_upstream_requests_total", peer=b.address) == b.count
        assert a.count + b.count == 40 and a.count and b.count
        dead_addr = f"127.0.0.1:{dead}"
        assert s.value("nginxgen_upstream_requests_total", peer=dead_addr, status="5xx") >= 1
        assert s.value("nginxgen_upstream_requests_total", peer=dead_addr, status="2xx") == 0
        assert s.value("nginxgen_requests_total", status="2xx") == 40
    finally:
        nginx.stop()
        shutil.rmtree(workdir, ignore_errors=True)
