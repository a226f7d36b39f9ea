"""The Redis cache end to end: real redis-server, real nginx with the Lua module, real backend.

Every test counts what reaches the backend: that is what the cache exists to reduce.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from nginxgen.util.resources import resource_dir
from tests.helpers import free_port, write_spec
from tests.integration.cache_gateway import CachedGateways, render

pytestmark = pytest.mark.requires("nginx-lua", "redis-server")


@pytest.fixture
def gateway(workdir, nginx_runner, redis_server) -> Iterator[CachedGateways]:
    """Factory: gateway(cache={...}, redis={...}) renders a cached route /c/ and starts nginx."""
    gateways = CachedGateways(workdir, nginx_runner, redis_server)
    yield gateways
    gateways.stop()


def test_miss_then_hits_the_backend_sees_one_request(gateway, redis_server):
    srv = redis_server()
    gw = gateway({"ttl": "30s"}, redis_srv=srv)
    gw.backend.extra_headers = {"ETag": '"v1"', "X-Internal": "kept"}

    first = gw.get("/c/item?b=2&a=1")
    assert first.status_code == 200
    assert first.headers["X-Cache"] == "MISS"
    hits = [gw.get("/c/item?b=2&a=1") for _ in range(49)]
    assert gw.backend.count == 1
    assert {r.headers["X-Cache"] for r in hits} == {"HIT"}
    hit = hits[-1]
    assert hit.content == first.content
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["ETag"] == '"v1"'  # every stored header is replayed
    assert hit.headers["X-Internal"] == "kept"
    assert int(hit.headers["Age"]) >= 0

    # Query arguments in another order are the same resource; another value is not.
    assert gw.get("/c/item?a=1&b=2").headers["X-Cache"] == "HIT"
    assert gw.get("/c/item?a=1&b=3").headers["X-Cache"] == "MISS"
    assert gw.backend.count == 2

    # HEAD is answered from the GET entry, without a body.
    head = requests.head(gw.url + "/c/item?a=1&b=2", timeout=10)
    assert head.headers["X-Cache"] == "HIT" and head.content == b""
    assert gw.backend.count == 2

    # Keys are hashes under the prefix: no path or query value is readable in Redis.
    keys = srv.command("KEYS", "*")
    assert len(keys) == 2
    assert all(k.startswith("nginxgen:cache:") and "item" not in k for k in keys)
    assert 0 < srv.command("PTTL", keys[0]) <= 30_000


def test_entries_expire_after_the_ttl(gateway):
    gw = gateway({"ttl": "1s"})
    assert gw.get("/c/t").headers["X-Cache"] == "MISS"
    assert gw.get("/c/t").headers["X-Cache"] == "HIT"
    deadline = time.monotonic() + 10
    while gw.get("/c/t").headers["X-Cache"] == "HIT":
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.1)
    assert gw.backend.count == 2


def test_credentials_and_no_cache_requests_bypass(gateway):
    gw = gateway({"ttl": "30s"})
    gw.get("/c/p")
    assert gw.get("/c/p").headers["X-Cache"] == "HIT"
    count = gw.backend.count
    for headers in (
        {"Authorization": "Bearer abc"},
        {"Cookie": "session=1"},
        {"Cache-Control": "no-cache"},
        {"Pragma": "no-cache"},
    ):
        for _ in range(3):
            r = gw.get("/c/p", headers=headers)
            assert r.status_code == 200
            assert r.headers["X-Cache"] == "BYPASS", headers
    assert gw.backend.count == count + 12
    # The personal request reached the backend with its credentials.
    assert gw.backend.headers_seen(-12)["authorization"] == "Bearer abc"


def test_credentials_may_be_cached_when_the_route_says_so(gateway):
    gw = gateway(
        {
            "ttl": "30s",
            "bypass_credentials": False,
            "shared_for_credentials": True,
            "allow_no_cache": False,
        }
    )
    gw.get("/c/p", headers={"Cookie": "a=1"})
    r = gw.get("/c/p", headers={"Cookie": "b=2", "Cache-Control": "no-cache"})
    assert r.headers["X-Cache"] == "HIT"
    assert gw.backend.count == 1


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (200, {"Set-Cookie": "s=1"}, None),
        (200, {"Cache-Control": "no-store"}, None),
        (200, {"Cache-Control": "private, max-age=60"}, None),
        (200, {"Vary": "Accept-Language"}, None),
        (200, {}, b"x" * 5000),  # over max_body: 4k
        (500, {}, None),
        (404, {}, None),
    ],
)
def test_unstorable_responses_are_never_stored(gateway, status, headers, body):
    gw = gateway({"ttl": "30s", "max_body": "4k"})
    gw.backend.status, gw.backend.extra_headers, gw.backend.body = status, headers, body
    for _ in range(4):
        r = gw.get("/c/u")
        assert r.status_code == status
        assert r.headers["X-Cache"] == "MISS"
        if body:
            assert r.content == body
    assert gw.backend.count == 4


def test_a_body_just_under_the_cap_is_stored_and_served_whole(gateway):
    gw = gateway({"ttl": "30s", "max_body": "4k"})
    gw.backend.body = bytes(range(256)) * 16  # exactly 4096 bytes, every byte value
    assert gw.get("/c/b").headers["X-Cache"] == "MISS"
    r = gw.get("/c/b")
    assert r.headers["X-Cache"] == "HIT"
    assert r.content == gw.backend.body


def test_configured_statuses_are_stored(gateway):
    gw = gateway({"ttl": "30s", "statuses": [200, 404]})
    gw.backend.status = 404
    gw.get("/c/missing")
    r = gw.get("/c/missing")
    assert (r.status_code, r.headers["X-Cache"]) == (404, "HIT")
    assert gw.backend.count == 1


def test_post_is_never_cached(gateway):
    gw = gateway({"ttl": "30s"})
    for i in range(3):
        r = requests.post(gw.url + "/c/o", data=f"n={i}", timeout=10)
        assert r.status_code == 200
        assert r.headers["X-Cache"] == "BYPASS"
    assert gw.backend.count == 3
    assert [q["body"] for q in gw.backend.requests] == [b"n=0", b"n=1", b"n=2"]
    assert gw.get("/c/o").headers["X-Cache"] == "MISS"  # the POSTs stored nothing


def test_client_host_neither_splits_nor_poisons_the_cache(gateway):
    gw = gateway(
        routes=[
            {"path": "/c/", "service": "app", "cache": {"ttl": "30s"}},
            {"path": "/v/", "service": "app", "cache": {"ttl": "30s", "use_request_host": True}},
        ]
    )
    first = gw.get("/c/h", headers={"Host": "evil.example"})
    assert first.headers["X-Cache"] == "MISS"
    for host in ("api.example.com", "other.example", "EVIL.example"):
        r = gw.get("/c/h", headers={"Host": host})
        assert r.headers["X-Cache"] == "HIT", host
        assert r.content == first.content
    assert gw.backend.count == 1

    # A route that asks for the client's Host keys on it: one entry per host.
    for host in ("a.example", "b.example", "a.example"):
        gw.get("/v/h", headers={"Host": host})
    assert gw.backend.count == 3


def test_redis_outage_fails_open_and_caching_resumes(gateway, redis_server):
    srv = redis_server()
    gw = gateway(
        {"ttl": "60s"},
        redis={"cooldown": "1s", "connect_timeout": "200ms", "read_timeout": "200ms"},
        redis_srv=srv,
    )
    gw.get("/c/r")
    assert gw.get("/c/r").headers["X-Cache"] == "HIT"
    srv.stop()

    count = gw.backend.count
    for _ in range(30):
        started = time.monotonic()
        r = gw.get("/c/r", timeout=5)
        elapsed = time.monotonic() - started
        assert r.status_code == 200
        assert r.headers["X-Cache"] == "BYPASS"
        assert r.json()["backend"] == "app"
        assert elapsed < 2.0, f"a request took {elapsed:.2f}s with Redis down"
    assert gw.backend.count == count + 30

    srv.start()  # same port; empty (no persistence)
    deadline = time.monotonic() + 20
    seen = []
    while not seen[-2:] == ["MISS", "HIT"]:
        assert time.monotonic() < deadline, f"caching did not resume: {seen[-10:]}"
        seen.append(gw.get("/c/r").headers["X-Cache"])
        time.sleep(0.05)
    assert "redis is back" in gw.nginx.errors()


def test_redis_over_a_unix_socket_with_another_db(gateway, redis_server):
    srv = redis_server()
    gw = gateway({"ttl": "30s"}, redis={"socket": str(srv.unix_socket), "db": 3}, redis_srv=srv)
    gw.get("/c/unix")
    assert gw.get("/c/unix").headers["X-Cache"] == "HIT"
    assert gw.backend.count == 1
    assert srv.command("DBSIZE") == 0  # db 0 is untouched
    assert "db3:keys=1" in srv.command("INFO", "keyspace")


def test_the_module_works_from_a_directory_the_workers_cannot_read(gateway, tmp_path):
    """pip installs under /root here; nginx's workers run as nobody. The master preloads."""
    private = tmp_path / "site-packages" / "nginxgen" / "_data"
    shutil.copytree(resource_dir("lua"), private / "lua")
    tmp_path.chmod(0o700)
    gw = gateway({"ttl": "30s"}, lua_dir=private / "lua")
    assert str(private) in gw.conf.read_text()
    assert gw.get("/c/x").headers["X-Cache"] == "MISS"
    assert gw.get("/c/x").headers["X-Cache"] == "HIT"
    assert "Permission denied" not in gw.nginx.errors()


@pytest.fixture
def silent_redis() -> Iterator[int]:
    """A port that accepts connections and never answers: Redis hung, not down."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_hung_redis_costs_a_few_timeouts_per_cooldown_not_one_per_request(
    gateway, redis_server, silent_redis
):
    srv = redis_server()
    srv.port = silent_redis  # the gateway talks to the silent port instead
    gw = gateway(
        {"ttl": "60s"},
        redis={"read_timeout": "1s", "errors_to_skip": 2, "cooldown": "60s"},
        redis_srv=srv,
    )
    slow = 0
    for _ in range(20):
        started = time.monotonic()
        r = gw.get("/c/slow")
        assert (r.status_code, r.headers["X-Cache"]) == (200, "BYPASS")
        slow += time.monotonic() - started >= 0.9  # a lookup that waited for the timeout
    # Lookups time out until 2 errors trip the cool-down; no store is attempted on a bypass.
    assert 1 <= slow <= 2, slow  # at least one proves the port really hung
    assert gw.backend.count == 20


def test_concurrent_misses_send_one_request_upstream(gateway):
    gw = gateway({"ttl": "30s", "stampede_wait": "5s"})
    gw.backend.delay = 0.5
    barrier = threading.Barrier(20)

    def fetch(_: int) -> requests.Response:
        barrier.wait()
        return gw.get("/c/stampede", timeout=20)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(fetch, range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    assert len({r.content for r in answers}) == 1
    assert gw.backend.count <= 2, gw.backend.count
    assert sorted(r.headers["X-Cache"] for r in answers).count("HIT") >= 18


def test_the_password_comes_from_the_environment_only(gateway, redis_server, monkeypatch, workdir):
    secret = "s3cret-Pa55-" + str(free_port())
    srv = redis_server(password=secret)
    monkeypatch.setenv("NGINXGEN_TEST_REDIS_PASSWORD", secret)
    gw = gateway(
        {"ttl": "30s"}, redis={"password_env": "NGINXGEN_TEST_REDIS_PASSWORD"}, redis_srv=srv
    )
    gw.get("/c/pw")
    assert gw.get("/c/pw").headers["X-Cache"] == "HIT"
    assert gw.backend.count == 1
    assert secret not in gw.conf.read_text()
    assert "env NGINXGEN_TEST_REDIS_PASSWORD;" in gw.conf.read_text()
    assert secret not in gw.nginx.errors()


def test_a_wrong_password_fails_open_without_logging_it(
    gateway, redis_server, monkeypatch, workdir
):
    srv = redis_server(password="the-right-one")
    monkeypatch.setenv("NGINXGEN_TEST_REDIS_PASSWORD", "the-wrong-one")
    gw = gateway(
        {"ttl": "30s"}, redis={"password_env": "NGINXGEN_TEST_REDIS_PASSWORD"}, redis_srv=srv
    )
    for _ in range(5):
        r = gw.get("/c/pw")
        assert (r.status_code, r.headers["X-Cache"]) == (200, "BYPASS")
    assert "the-wrong-one" not in gw.nginx.errors()
    assert "redis read failed" in gw.nginx.errors()


def test_both_flavours_render_valid_configs(workdir):
    for flavor in ("nginx", "openresty"):
        spec = write_spec(
            workdir,
            {
                "nginx": {"flavor": flavor, "listen": free_port(), "pid": "nginx.pid"},
                "redis": {"host": "127.0.0.1", "port": 6379, "password_env": "REDIS_PW"},
                "routes": [
                    {"path": "/c/", "service": "app", "cache": {"ttl": "5s", "l1": {"ttl": "1s"}}}
                ],
            },
            {"app": [{"id": "a", "address": "127.0.0.1:9"}]},
        )
        out = workdir / f"{flavor}.conf"
        # No OpenResty binary here: its config is checked by crossplane and the round-trip.
        result = render(spec, out, "--nginx-test" if flavor == "nginx" else "--no-nginx-test")
        assert result.returncode == 0, result.stderr
        text = out.read_text()
        assert ("load_module" in text) == (flavor == "nginx"), flavor
        assert "lua_package_path" in text and "init_by_lua_block" in text
        if flavor == "nginx":
            assert "crossplane + nginx -t" in result.stderr
