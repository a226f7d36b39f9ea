"""The cache attacked as a cache-poisoning tester would: real nginx, real Redis, and a backend
that echoes every request header and the body into its answer. Whatever one client could
slip past the key would show up, byte for byte, in what the next client gets.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import AuthService, free_port, write_spec
from tests.integration.cache_gateway import CachedGateways, render

pytestmark = pytest.mark.requires("nginx-lua", "redis-server")

LUA_TESTS = Path(__file__).resolve().parent.parent / "lua"

# What a poisoner sends: every override and forwarding header, each with a marker value.
HOSTILE = {
    "X-Original-URL": "/evil-original-url",
    "X-Original-URI": "/evil-original-uri",
    "X-Rewrite-URL": "/evil-rewrite-url",
    "X-Original-Host": "evil-original-host.example",
    "X-Host": "evil-x-host.example",
    "X-HTTP-Host-Override": "evil-host-override.example",
    "X-HTTP-Method-Override": "EVILMETHOD",
    "X-HTTP-Method": "EVILMETHOD2",
    "X-Method-Override": "EVILMETHOD3",
    "Forwarded": "for=6.6.6.6;host=evil-forwarded.example;proto=evilproto",
    "X-Forwarded-Host": "evil-xfh.example",
    "X-Forwarded-For": "6.6.6.7",
    "X-Forwarded-Proto": "evilproto2",
    "X-Forwarded-Port": "6666",
    "X-Forwarded-Prefix": "/evil-prefix",
    "X-Forwarded-Scheme": "evilscheme",
    "X-Forwarded-Server": "evil-server.example",
    "X-Forwarded-Ssl": "evil-ssl",
    "X-Forwarded-Uri": "/evil-forwarded-uri",
    "X-Forwarded-Client-Cert": "evil-cert",
    "X-Real-IP": "6.6.6.8",
}
MARKERS = ("evil", "6.6.6", "6666")


def assert_clean(text: str) -> None:
    found = [m for m in MARKERS if m in text.lower()]
    assert not found, f"{found} from another client reached this answer: {text[:600]}"


@pytest.fixture
def gateway(workdir, nginx_runner, redis_server) -> Iterator[CachedGateways]:
    gateways = CachedGateways(workdir, nginx_runner, redis_server)
    yield gateways
    gateways.stop()


@pytest.fixture
def auth() -> Iterator[AuthService]:
    service = AuthService({"token-alice": "alice", "token-bob": "bob"})
    yield service
    service.stop()


def user_of(r: requests.Response) -> str | None:
    """The X-User-Id the backend was sent for the request this answer was made for."""
    return next((v for k, v in r.json()["headers"] if k.lower() == "x-user-id"), None)


# --- 1. identity added by the gateway is in the key -------------------------------------


@pytest.mark.parametrize("carrier", ["X-Token", "Authorization"])
def test_two_users_behind_the_auth_route_never_see_each_others_answer(gateway, auth, carrier):
    cache = {"ttl": "30s"}
    if carrier == "Authorization":  # tokens in Authorization: the cache must be told to serve
        cache |= {"bypass_credentials": False, "shared_for_credentials": True}
    route = {
        "path": "/c/",
        "service": "app",
        "auth": {"url": auth.url, "forward_headers": ["X-User-Id"]},
        "cache": cache,
    }
    gw = gateway(routes=[route])

    def as_user(token: str, **headers: str) -> requests.Response:
        value = f"Bearer {token}" if carrier == "Authorization" else token
        return gw.get("/c/me", headers={carrier: value, **headers})

    answers = [(who, as_user(f"token-{who}")) for who in ("alice", "bob", "alice", "bob")]
    answers += [("alice", as_user("token-alice", **{"X-User-Id": "bob"}))]  # a false claim
    for who, r in answers:
        assert r.status_code == 200
        assert user_of(r) == who, (who, r.headers["X-Cache"], r.text)
    assert [r.headers["X-Cache"] for _, r in answers] == ["MISS", "MISS", "HIT", "HIT", "HIT"]
    assert gw.backend.count == 2

    # Without a valid token the auth service answers first, whatever the cache holds.
    for headers in ({}, {carrier: "token-mallory"}):
        r = gw.get("/c/me", headers=headers)
        assert r.status_code == 401 and "X-Cache" not in r.headers
    assert gw.backend.count == 2


def test_api_key_consumers_get_their_own_entries_unless_the_route_shares(
    gateway, workdir, redis_server
):
    (workdir / "keys.txt").write_text("key-one-1f2e3d\nkey-two-9a8b7c\n")
    keys = {"file": str(workdir / "keys.txt")}
    srv = redis_server()
    gw = gateway(
        redis_srv=srv,
        routes=[
            {"path": "/c/", "service": "app", "auth": {"api_keys": keys}, "cache": {"ttl": "30s"}},
            {
                "path": "/s/",
                "service": "app",
                "auth": {"api_keys": keys},
                "cache": {"ttl": "30s", "vary_on_identity": False},
            },
        ],
    )
    one, two = {"X-Api-Key": "key-one-1f2e3d"}, {"X-Api-Key": "key-two-9a8b7c"}
    seen = [gw.get("/c/k", headers=h).headers["X-Cache"] for h in (one, two, one, two)]
    assert seen == ["MISS", "MISS", "HIT", "HIT"]
    assert gw.backend.count == 2
    assert all("key-" not in r["headers"].__repr__() for r in gw.backend.requests)  # removed
    assert gw.get("/c/k", headers={"X-Api-Key": "wrong"}).status_code == 401
    assert gw.get("/c/k").status_code == 401
    # A route that says the answer is the same for every consumer shares one entry.
    shared = [gw.get("/s/k", headers=h).headers["X-Cache"] for h in (one, two)]
    assert shared == ["MISS", "HIT"]
    assert all("key-" not in k for k in srv.command("KEYS", "*"))


def test_a_shared_cache_on_a_route_that_forwards_identity_is_refused(workdir, auth):
    def attempt(cache: dict[str, object]) -> tuple[int, str]:
        spec = write_spec(
            workdir,
            {
                "nginx": {"flavor": "nginx", "listen": free_port(), "pid": "nginx.pid"},
                "redis": {},
                "routes": [
                    {
                        "path": "/c/",
                        "service": "app",
                        "auth": {"url": auth.url, "forward_headers": ["X-User-Id"]},
                        "cache": cache,
                    }
                ],
            },
            {"app": [{"id": "a", "address": "127.0.0.1:9"}]},
        )
        result = render(spec, workdir / "out.conf")
        return result.returncode, result.stderr

    code, err = attempt({"ttl": "30s", "vary_on_identity": False})
    assert code != 0 and not (workdir / "out.conf").exists()
    assert "routes[0]" in err and "vary_on_identity: false" in err and "X-User-Id" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, err = attempt({"ttl": "30s", "bypass_credentials": False})
    assert code != 0 and "shared_for_credentials: true" in err


# --- 2. unkeyed request inputs never reach the backend ----------------------------------


def test_no_header_a_poisoner_sends_reaches_what_another_client_gets(gateway):
    gw = gateway({"ttl": "30s"})
    poisoned = gw.get("/c/page", headers={"Host": "evil-host.example", **HOSTILE})
    assert poisoned.headers["X-Cache"] == "MISS"
    assert_clean(poisoned.text)  # stripped or overwritten before the backend saw them
    sent = gw.backend.headers_seen()
    assert sent["host"] == sent["x-forwarded-host"] == "api.example.com"
    assert sent["x-forwarded-for"] == sent["x-real-ip"] == "127.0.0.1"
    assert (sent["x-forwarded-proto"], sent["x-forwarded-port"]) == ("http", gw.url.split(":")[-1])

    victim = gw.get("/c/page")
    assert victim.headers["X-Cache"] == "HIT"
    assert victim.content == poisoned.content
    assert_clean(victim.text)
    assert gw.backend.count == 1


def test_a_route_keyed_on_the_clients_host_sends_that_host(gateway):
    gw = gateway(
        routes=[
            {"path": "/v/", "service": "app", "cache": {"ttl": "30s", "use_request_host": True}}
        ]
    )
    evil = gw.get("/v/p", headers={"Host": "evil-host.example"})
    assert gw.backend.headers_seen()["host"] == "evil-host.example"
    victim = gw.get("/v/p", headers={"Host": "api.example.com"})
    assert (evil.headers["X-Cache"], victim.headers["X-Cache"]) == ("MISS", "MISS")
    assert_clean(victim.text)
    assert gw.backend.headers_seen()["host"] == "api.example.com"
    assert gw.get("/v/p", headers={"Host": "API.example.com"}).headers["X-Cache"] == "HIT"


def test_a_catch_all_server_keys_on_the_host_it_sends(gateway):
    gw = gateway({"ttl": "30s"}, server_name="_")
    gw.get("/c/p", headers={"Host": "evil-host.example"})
    victim = gw.get("/c/p", headers={"Host": "shop.example"})
    assert victim.headers["X-Cache"] == "MISS"
    assert_clean(victim.text)
    assert gw.get("/c/p", headers={"Host": "shop.example"}).headers["X-Cache"] == "HIT"


def test_forwarding_headers_are_the_gateways_on_every_route(gateway, auth):
    routes = [
        {"path": "/plain/", "service": "app"},
        {"path": "/guarded/", "service": "app", "auth": {"url": auth.url}},
    ]
    gw = gateway(routes=routes)
    for path in ("/plain/x", "/guarded/x"):
        r = gw.get(path, headers={"X-Token": "token-alice", **HOSTILE})
        assert r.status_code == 200
        sent = gw.backend.headers_seen()
        assert "forwarded" not in sent and "x-forwarded-prefix" not in sent
        assert_clean(repr({k: v for k, v in sent.items() if k.startswith("x-forwarded")}))
        assert sent["x-forwarded-for"] == "127.0.0.1"
    # The auth service is told the same, never the client's version.
    check = auth.seen[-1]
    assert check["x-forwarded-for"] == "127.0.0.1" and check["x-forwarded-proto"] == "http"
    assert_clean(repr({k: v for k, v in check.items() if "forward" in k or k == "x-real-ip"}))


def test_a_get_body_bypasses_and_never_reaches_another_client(gateway):
    gw = gateway({"ttl": "30s"})
    for body in (b"evil-body=1", iter([b"evil-", b"chunked"])):  # Content-Length, chunked
        r = requests.get(gw.url + "/c/b", data=body, timeout=10)
        assert r.headers["X-Cache"] == "BYPASS"
        assert gw.backend.requests[-1]["body"].startswith(b"evil-")  # it did reach the backend
    victim = gw.get("/c/b")
    assert victim.headers["X-Cache"] == "MISS"  # the bodies stored nothing
    assert gw.get("/c/b").headers["X-Cache"] == "HIT"
    assert_clean(victim.text)


def test_key_headers_are_keyed_on_and_passed_on_purpose(gateway):
    gw = gateway({"ttl": "30s", "key_headers": ["X-Tenant", "X-Host"]})

    def get(*headers: tuple[str, str]) -> tuple[str, dict[str, str]]:
        """A GET with these header lines, repeats included; (X-Cache, what the backend saw)."""
        conn = http.client.HTTPConnection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]), timeout=10)
        conn.putrequest("GET", "/c/t")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        r = conn.getresponse()
        seen = {k.lower(): v for k, v in json.loads(r.read())["headers"]}
        conn.close()
        return r.getheader("X-Cache") or "", seen

    a, b = ("X-Tenant", "a"), ("X-Tenant", "b")
    results = [get(a), get(b), get(a), get(), get(a, b), get(("X-Tenant", "a, b")), get(a, b)]
    assert [x for x, _ in results] == ["MISS", "MISS", "HIT", "MISS", "MISS", "MISS", "HIT"]
    assert results[2][1]["x-tenant"] == "a" and "x-tenant" not in results[3][1]
    # A listed override header is keyed on like any other, and reaches the backend.
    cached, seen = get(a, ("X-Host", "h1.example"))
    assert cached == "MISS" and seen["x-host"] == "h1.example"
    assert get(a, ("X-Host", "h2.example"))[0] == "MISS"
    assert get(a, ("X-Host", "h1.example"))[0] == "HIT"


def test_a_fill_asks_for_the_whole_answer(gateway):
    gw = gateway({"ttl": "30s"})
    headers = {"Range": "bytes=0-3", "If-None-Match": '"old"', "If-Modified-Since": "x"}
    first = gw.get("/c/r", headers=headers)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    sent = gw.backend.headers_seen()
    assert not {"range", "if-none-match", "if-modified-since"} & sent.keys()
    assert gw.get("/c/r").content == first.content


# --- 3. hits carry the stored answer's headers; zero lifetimes are not stored -----------

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Content-Disposition": 'attachment; filename="report.json"',
    "Access-Control-Allow-Origin": "https://app.example",
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Expose-Headers": "ETag",
    "Strict-Transport-Security": "max-age=31536000",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "public, max-age=60",
}


def test_a_hit_carries_the_stored_security_headers(gateway):
    gw = gateway({"ttl": "30s"})
    gw.backend.extra_headers = {**SECURITY_HEADERS, "Keep-Alive": "timeout=5", "Trailer": "X-T"}
    miss = gw.get("/c/s", headers={"X-Request-ID": "fill-1"})
    assert miss.headers["X-Cache"] == "MISS"
    # The store finishes after the answer went out: on a loaded machine the next request
    # may come first and miss too (and fill again). The first hit is what is checked.
    misses, deadline = 1, time.monotonic() + 10
    while True:
        hit = gw.get("/c/s", headers={"X-Request-ID": "hit-1"})
        if hit.headers["X-Cache"] == "HIT" or time.monotonic() > deadline:
            break
        misses += 1
        time.sleep(0.05)
    assert hit.headers["X-Cache"] == "HIT"
    for name, value in SECURITY_HEADERS.items():
        assert hit.headers.get(name) == miss.headers.get(name) == value, name
    assert hit.headers["Content-Type"] == "application/json"
    assert "Trailer" not in hit.headers  # hop-by-hop: not stored
    assert hit.headers["X-Request-ID"] == "hit-1"  # this request's id, once
    assert 0 <= int(hit.headers["Age"]) <= 30
    assert gw.backend.count == misses


@pytest.mark.parametrize(
    "headers",
    [
        {"Cache-Control": "max-age=0"},
        {"Cache-Control": "public, s-maxage=0"},
        {"Cache-Control": "s-maxage=0, max-age=600"},
        {"Cache-Control": "no-cache"},
        {"Expires": "0"},
    ],
)
def test_zero_lifetimes_from_the_upstream_are_not_stored(gateway, headers):
    gw = gateway({"ttl": "30s"})
    gw.backend.extra_headers = headers
    assert [gw.get("/c/z").headers["X-Cache"] for _ in range(3)] == ["MISS"] * 3
    assert gw.backend.count == 3


def test_a_shorter_upstream_lifetime_shortens_the_ttl(gateway):
    gw = gateway({"ttl": "10m", "l1": {"ttl": "5m"}})
    gw.backend.extra_headers = {"Cache-Control": "max-age=0, s-maxage=2"}
    gw.get("/c/m")
    assert gw.get("/c/m").headers["X-Cache"] == "HIT"
    (key,) = gw.redis.command("KEYS", "*")
    assert 0 < gw.redis.command("PTTL", key) <= 2000
    deadline = time.monotonic() + 15
    while gw.get("/c/m").headers["X-Cache"] == "HIT":  # L1 too lets go with the entry
        assert time.monotonic() < deadline, "the entry outlived its s-maxage"
        time.sleep(0.1)


# --- stampede and clients ---------------------------------------------------------------


def test_a_waiter_whose_filler_is_slower_than_the_wait_goes_upstream_at_once(gateway):
    gw = gateway({"ttl": "30s", "stampede_wait": "3s"})  # the lock lives 4s
    filler: list[requests.Response] = []
    thread = threading.Thread(
        target=lambda: filler.append(gw.get("/c/slow", headers={"X-Test-Delay": "8"}, timeout=30))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while gw.backend.count == 0:
            assert time.monotonic() < deadline, "the filler never reached the backend"
            time.sleep(0.01)
        started = gw.backend.requests[0]["at"]
        while time.monotonic() - started < 3.1:  # the filler has now run longer than the wait
            time.sleep(0.01)
        sent = time.monotonic()
        # Until the lock expires (4s) a waiter bounded by its own arrival would still wait.
        assert sent - started < 3.6, "the machine was too slow to send the waiter in time"
        waiter = gw.get("/c/slow", timeout=30)
        took = time.monotonic() - sent
        assert waiter.headers["X-Cache"] == "MISS"
        assert took < 0.5, f"the waiter waited {took:.2f}s for a fill it could not use"
    finally:
        thread.join(30)
    assert filler and filler[0].headers["X-Cache"] == "MISS"
    assert gw.backend.count == 2
    deadline = time.monotonic() + 10
    while gw.get("/c/slow").headers["X-Cache"] != "HIT":  # the filler's answer is stored
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_resty_redis_client_shape_works_against_real_redis(gateway):
    """OpenResty's resty.redis (set_timeouts) stood in by tests/lua/resty_shim."""
    gw = gateway(
        {"ttl": "30s"},
        redis={"connect_timeout": "100ms", "read_timeout": "200ms"},
        lua_path=(LUA_TESTS / "resty_shim",),
    )
    assert gw.get("/c/o").headers["X-Cache"] == "MISS"
    assert gw.get("/c/o").headers["X-Cache"] == "HIT"
    assert gw.backend.count == 1
    log = gw.nginx.errors()
    assert "resty shim: set_timeouts(100, 200, 200)" in log and "set_timeout called" not in log
