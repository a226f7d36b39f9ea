"""The Lua balancer and endpoint feed in a real nginx with real backends.

nginx starts as root (workers as nobody) from a hand-written config shaped like the one
the Python side will render (docs/endpoints-feed.md); the sidecar's part is played by
plain HTTP calls to the feed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import Backend, free_port, who_answers
from tests.lua.harness import DynGateway, needs_lua, peer, uid_of

pytestmark = needs_lua()

Factory = Callable[..., DynGateway]


@pytest.fixture
def gateway(workdir: Path) -> Iterator[Factory]:
    started: list[DynGateway] = []

    def make(upstreams: dict[str, Any], services: dict[str, Any], **kw: Any) -> DynGateway:
        gw = DynGateway(workdir, upstreams, services, **kw).start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def tried(url: str, n: int) -> list[str]:
    """X-Upstream of n requests: the peers each request tried, in order."""
    with requests.Session() as s:
        return [s.get(url, timeout=10).headers.get("X-Upstream", "") for _ in range(n)]


def share(seen: Counter[str], name: str) -> float:
    return seen[name] / sum(seen.values())


def test_weights_one_to_three_hold_within_two_points(gateway: Factory, backends) -> None:
    a, b = backends("a"), backends("b")
    gw = gateway(
        {"carts": {}},
        {"carts": {"peers": [peer(a.port, weight=1), peer(b.port, weight=3)]}},
        workers=1,
    )
    seen = who_answers(gw.url("carts"), 2000)
    assert abs(share(seen, "a") - 0.25) <= 0.02, seen
    assert abs(share(seen, "b") - 0.75) <= 0.02, seen
    # a warm-up step: the same peers at 30 % and 100 % of weight 10, pushed without a reload
    r = gw.feed.push(
        {
            "generation": 2,
            "services": {"carts": {"peers": [peer(a.port, weight=3), peer(b.port, weight=10)]}},
        }
    )
    assert r.status_code == 200, r.text
    gw.converged(2)
    seen = who_answers(gw.url("carts"), 2000)
    assert abs(share(seen, "a") - 3 / 13) <= 0.02, seen


def test_a_large_plan_loads_and_one_service_changes_alone(gateway: Factory, backends) -> None:
    a, b = backends("a"), backends("b")
    names = [f"svc-{i}" for i in range(300)]
    gw = gateway(
        {n: {} for n in names},
        {n: {"peers": [peer(a.port), peer(free_port(), state="down")]} for n in names},
        workers=1,
    )
    assert len(gw.conf.read_text()) > 60_000
    assert who_answers(gw.url("svc-299"), 3) == Counter({"a": 3})
    r = gw.feed.push({"generation": 2, "services": {"svc-7": {"peers": [peer(b.port)]}}})
    assert r.status_code == 200, r.text
    gw.converged(2)
    assert who_answers(gw.url("svc-7"), 3) == Counter({"b": 3})
    assert who_answers(gw.url("svc-8"), 3) == Counter({"a": 3})
    assert gw.feed.status("svc-8")["generation"] == 1, "untouched services keep theirs"


def test_a_push_moves_traffic_without_a_reload(gateway: Factory, backends) -> None:
    a, c = backends("a"), backends("c")
    gw = gateway({"carts": {}}, {"carts": {"peers": [peer(a.port)]}}, workers=2)
    assert who_answers(gw.url("carts"), 20) == Counter({"a": 20})
    pids = gw.workers()
    assert len(pids) == 2
    start = time.monotonic()
    r = gw.feed.push({"generation": 5, "services": {"carts": {"peers": [peer(c.port)]}}})
    assert r.status_code == 200, r.text
    assert r.json() == {"generation": 5, "services": 1}
    gw.converged(5, timeout=2.0)
    took = time.monotonic() - start
    # Design target 100 ms (poll every 10 ms; benchmarks/balancer.py prints it); the
    # deadline leaves room for a loaded 2-core machine.
    assert took < 1.0, took
    assert who_answers(gw.url("carts"), 40) == Counter({"c": 40})
    assert gw.workers() == pids, "no worker was replaced"
    status = gw.feed.status()
    assert {w["pid"] for w in status["workers"]} == pids
    assert all(w["generation"] == 5 for w in status["workers"])


def test_hostile_pushes_are_refused_and_change_nothing(gateway: Factory, backends) -> None:
    a = backends("a")
    gw = gateway(
        {"carts": {}, "users": {}},
        {"carts": {"peers": [peer(a.port)]}},
        generation=10,
        max_body="64k",
    )
    good = {"generation": 11, "services": {"carts": {"peers": [peer(free_port())]}}}

    def refused(r: requests.Response, status: int, words: str) -> dict[str, Any]:
        assert r.status_code == status, r.text
        body = r.json()
        assert words in body["error"], body
        return body

    refused(gw.feed.push(good, token="wrong"), 401, "token")
    r = requests.post(gw.feed.base, json=good, timeout=5)  # no token at all
    refused(r, 401, "token")
    r = requests.post(gw.feed.base, json=good, params={"token": gw.token}, timeout=5)
    refused(r, 401, "token")
    r = requests.get(gw.feed.base, headers={"Authorization": f"Bearer {gw.token}"}, timeout=5)
    refused(r, 405, "POST")
    bad_host = {
        "generation": 11,
        "services": {"carts": {"peers": [peer(8080, host="127.0.0.1;\n}server{listen 80")]}},
    }
    body = refused(gw.feed.push(bad_host), 400, "not an IP address literal")
    assert (body["service"], body["peer"], body["field"]) == ("carts", 0, "host")
    assert "\n" not in body["error"]
    body = refused(
        gw.feed.push({"generation": 11, "services": {"evil": {"peers": [peer(a.port)]}}}),
        400,
        "unknown service",
    )
    assert body["service"] == "evil"
    refused(
        gw.feed.push({**good, "generation": 10}), 409, "not newer than the current generation 10"
    )
    refused(gw.feed.push({**good, "generation": 3}), 409, "not newer")
    wrong_types = [
        ({"generation": "11", "services": {}}, "generation"),
        (
            {"generation": 11, "services": {"carts": {"peers": {"host": "127.0.0.1"}}}},
            "list of peers",
        ),
        ({"generation": 11, "services": {"carts": {"peers": [peer("80")]}}}, "port"),  # type: ignore[arg-type]
        ({"generation": 11, "services": {"carts": {"peers": [peer(80, weight=2.5)]}}}, "weight"),
        ({"generation": 11, "services": {"carts": {"peers": [peer(80, backup="no")]}}}, "backup"),
        ({"generation": 11, "services": {"carts": {"peers": [peer(80, state="gone")]}}}, "state"),
        ({"generation": 11, "services": "carts"}, "services"),
        ({"generation": 11, "services": {"carts": {"peers": [peer(80)], "tries": "3"}}}, "tries"),
    ]
    for doc, words in wrong_types:
        refused(gw.feed.push(doc), 400, words)
    refused(gw.feed.push(None, raw=b"{not json"), 400, "not valid JSON")
    huge = {
        "generation": 11,
        "services": {"carts": {"peers": [peer(a.port)]}},
        "pad": "x" * 100_000,
    }
    r = gw.feed.push(huge)
    assert r.status_code == 413, r.text  # nginx's client_max_body_size answers first
    # nothing changed: same generation, same peers, traffic still on a
    assert gw.feed.status()["generation"] == 10
    assert who_answers(gw.url("carts"), 10) == Counter({"a": 10})
    view = gw.feed.status("carts")
    assert [p["port"] for p in view["peers"]] == [a.port]
    # the feed is not on the public listener
    r = requests.post(f"http://127.0.0.1:{gw.port}/nginxgen/endpoints", json=good, timeout=5)
    assert r.status_code == 404
    assert "push refused (400)" in gw.error_log()
    assert gw.token not in gw.error_log()
    assert gw.token not in gw.conf.read_text(), "only the digest is in nginx.conf"


def test_the_lua_body_limit_backs_up_client_max_body_size(gateway: Factory, backends) -> None:
    a = backends("a")
    gw = gateway(
        {"carts": {}},
        {"carts": {"peers": [peer(a.port)]}},
        max_body="1m",  # client_max_body_size lets it through; the Lua check does not
        options={"max_body": 2048},
    )
    pad = [peer(1000 + i) for i in range(100)]
    r = gw.feed.push({"generation": 2, "services": {"carts": {"peers": pad}}})
    assert r.status_code == 413, r.text
    assert "larger than 2048 bytes" in r.json()["error"]


def test_passive_health_takes_a_dead_peer_out_and_back(gateway: Factory, backends) -> None:
    a = backends("a")
    dead_port = free_port()
    gw = gateway(
        {"carts": {"max_fails": 2, "fail_timeout": 5}},
        {"carts": {"peers": [peer(a.port), peer(dead_port)]}},
        workers=2,
    )
    dead = f"127.0.0.1:{dead_port}"
    # Every request succeeds (the retry reaches a); the dead peer is tried until it is out.
    attempts = tried(gw.url("carts"), 20)
    assert sum(dead in t for t in attempts) <= 3, attempts  # max_fails, +1 if a race
    view = gw.feed.status("carts")
    out = next(p for p in view["peers"] if p["port"] == dead_port)
    assert out["out_for"] and out["out_for"] > 0, view
    assert all(dead not in t for t in tried(gw.url("carts"), 20))
    # A push that reorders the list and adds a peer keeps what was learnt (ip:port keyed).
    b = backends("b")
    r = gw.feed.push(
        {
            "generation": 2,
            "services": {"carts": {"peers": [peer(dead_port), peer(b.port), peer(a.port)]}},
        }
    )
    assert r.status_code == 200, r.text
    gw.converged(2)
    assert all(dead not in t for t in tried(gw.url("carts"), 30))
    # The peer comes alive; after fail_timeout it takes requests again.
    revived = Backend("revived", dead_port).start()
    try:
        deadline = time.monotonic() + 20
        seen: Counter[str] = Counter()
        while time.monotonic() < deadline and not seen["revived"]:
            seen += who_answers(gw.url("carts"), 10)
            time.sleep(0.1)
        assert seen["revived"] > 0, seen
        assert set(seen) <= {"a", "b", "revived"}, seen
    finally:
        revived.stop()


def test_a_peer_that_left_and_came_back_is_served_at_once(gateway: Factory, backends) -> None:
    """A unit restarted on its address: deregistered, then registered again. What its
    failures before the restart earned it (out for fail_timeout) no longer holds."""
    a = backends("a")
    port = free_port()
    gw = gateway(
        {"carts": {"max_fails": 1, "fail_timeout": 60}},
        {"carts": {"peers": [peer(a.port), peer(port)]}},
        workers=2,
    )
    tried(gw.url("carts"), 10)  # the unit is down: its failures take it out for 60 s

    def unit() -> dict[str, Any]:
        return next(p for p in gw.feed.status("carts")["peers"] if p["port"] == port)

    def push(gen: int, ports: list[int]) -> None:
        r = gw.feed.push(
            {"generation": gen, "services": {"carts": {"peers": list(map(peer, ports))}}}
        )
        assert r.status_code == 200, r.text
        gw.converged(gen)

    assert unit().get("out_for"), unit()
    push(2, [a.port])
    restarted = Backend("restarted", port).start()
    try:
        push(3, [a.port, port])
        assert not unit().get("out_for") and unit()["fails"] == 0, unit()
        assert who_answers(gw.url("carts"), 20)["restarted"] >= 5
    finally:
        restarted.stop()


def test_the_last_attempt_counts_too(gateway: Factory, backends) -> None:
    """tries 1: no retry reports the failure; the log hook must, or the peer never goes out."""
    live = backends("live")
    gw = gateway(
        {"carts": {"max_fails": 2, "fail_timeout": 30}},
        {"carts": {"peers": [peer(free_port()), peer(live.port)], "tries": 1}},
        workers=1,
    )
    seen = who_answers(gw.url("carts"), 40)
    assert seen["HTTP 502"] == 2 and seen["live"] == 38, seen
    # a 502 the backend sends itself is an answer, not a failure (nginx's rule)
    live.status = 502
    seen = who_answers(gw.url("carts"), 10)
    assert seen["HTTP 502"] == 10
    view = gw.feed.status("carts")
    assert [p["fails"] for p in view["peers"]][1] == 0, view


def test_failover_reaches_a_live_peer(gateway: Factory, backends) -> None:
    live = backends("live")
    dead = [free_port(), free_port()]
    gw = gateway(
        {"carts": {"max_fails": 0}},  # no passive checks: every request meets the dead ones
        {"carts": {"peers": [peer(dead[0]), peer(dead[1]), peer(live.port)], "tries": 3}},
        workers=1,
    )
    seen = who_answers(gw.url("carts"), 30)
    assert seen == Counter({"live": 30}), seen
    attempts = tried(gw.url("carts"), 6)
    assert all(t.endswith(f":{live.port}") for t in attempts), attempts
    assert any("," in t for t in attempts), attempts  # the dead ones were tried first
    # tries 1: no retry, the dead peers answer 502 themselves
    r = gw.feed.push(
        {
            "generation": 2,
            "services": {"carts": {"peers": [peer(dead[0]), peer(live.port)], "tries": 1}},
        }
    )
    assert r.status_code == 200
    gw.converged(2)
    seen = who_answers(gw.url("carts"), 20)
    assert seen["HTTP 502"] == 10 and seen["live"] == 10, seen


def test_nobody_to_serve_is_refused_with_500_contacting_no_one(gateway: Factory, backends) -> None:
    # No peer up with a weight and no backup: balance() refuses on the first try, and
    # nginx answers 500 without a connect (a rendered route's error_page makes it the 503
    # on purpose: tests/integration/test_dynamic_endpoints.py). Nothing to log: it is
    # the registry's answer, not a failure.
    gw = gateway(
        {"carts": {}},
        {"carts": {"peers": [peer(free_port(), state="down"), peer(free_port(), weight=0)]}},
        workers=1,
    )
    seen = who_answers(gw.url("carts"), 30)
    assert seen == Counter({"HTTP 500": 30}), seen
    log = gw.error_log()
    assert "nginxgen balancer: upstream carts" not in log
    assert "connect() failed" not in log


def test_the_refusal_becomes_the_503_and_other_500s_stay(gateway: Factory, backends) -> None:
    a = backends("a")
    gw = gateway(
        {"carts": {}, "users": {}},
        {"carts": {"peers": [peer(free_port(), state="down")]}, "users": {"peers": [peer(a.port)]}},
        workers=1,
    )
    r = requests.get(gw.url("carts-page"), timeout=5)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"error": "service unavailable", "service": "carts"}
    assert requests.get(gw.url("users-page"), timeout=5).headers["X-Backend"] == "a"
    # A 500 of the route's own while the service has someone to serve stays a 500.
    assert requests.get(gw.url("users-error"), timeout=5).status_code == 500
    assert "[error]" not in gw.error_log(), "unavailable() answered, it did not fail"
    # A push that brings carts back: served at once, no 503 left behind.
    r = gw.feed.push({"generation": 2, "services": {"carts": {"peers": [peer(a.port)]}}})
    assert r.status_code == 200, r.text
    gw.converged(2)
    assert requests.get(gw.url("carts-page"), timeout=5).headers["X-Backend"] == "a"


def test_backups_serve_only_when_the_primaries_cannot(gateway: Factory, backends) -> None:
    a, b, z = backends("a"), backends("b"), backends("z")
    gw = gateway(
        {"carts": {"max_fails": 1, "fail_timeout": 30}},
        {"carts": {"peers": [peer(a.port), peer(b.port), peer(z.port, backup=True)]}},
        workers=1,
    )
    seen = who_answers(gw.url("carts"), 200)
    assert seen["z"] == 0 and seen["a"] == seen["b"] == 100, seen
    a.stop()
    b.stop()
    seen = who_answers(gw.url("carts"), 50)
    assert seen == Counter({"z": 50}), seen


def test_draining_gets_no_new_requests_and_down_is_never_chosen(gateway: Factory, backends) -> None:
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = gateway(
        {"carts": {}},
        {
            "carts": {
                "peers": [
                    peer(a.port),
                    peer(b.port, state="draining", weight=5),
                    peer(c.port, state="down"),
                ]
            }
        },
        workers=1,
    )
    assert who_answers(gw.url("carts"), 30) == Counter({"a": 30})
    view = gw.feed.status("carts")
    assert [p["state"] for p in view["peers"]] == ["up", "draining", "down"]


def test_consistent_hash_is_stable_when_a_peer_joins(gateway: Factory, backends) -> None:
    bs = [backends(f"h{i}") for i in range(4)]
    gw = gateway(
        {"users": {"balance": "consistent_hash"}},
        {"users": {"peers": [peer(b.port) for b in bs]}},
        workers=2,
    )
    keys = [f"user-{i}" for i in range(400)]

    def mapping() -> dict[str, str]:
        out = {}
        with requests.Session() as s:
            for k in keys:
                r = s.get(gw.url("users"), params={"k": k}, timeout=10)
                out[k] = r.headers["X-Backend"]
        return out

    before = mapping()
    assert mapping() == before, "the same key always lands on the same peer"
    assert len(set(before.values())) == 4
    new = backends("h4")
    r = gw.feed.push(
        {"generation": 2, "services": {"users": {"peers": [peer(b.port) for b in [new, *bs]]}}}
    )
    assert r.status_code == 200
    gw.converged(2)
    after = mapping()
    moved = [k for k in keys if after[k] != before[k]]
    assert all(after[k] == "h4" for k in moved), "keys only move to the new peer"
    assert 0.1 <= len(moved) / len(keys) <= 0.3, len(moved)


def test_least_conn_prefers_the_idle_peer(gateway: Factory, backends) -> None:
    import concurrent.futures

    slow, fast = backends("slow"), backends("fast")
    slow.delay = 0.3
    gw = gateway(
        {"carts": {"balance": "least_conn"}},
        {"carts": {"peers": [peer(slow.port), peer(fast.port)]}},
        workers=1,
    )
    url = gw.url("carts")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: requests.get(url, timeout=10).headers["X-Backend"], range(80))
        )
    seen = Counter(answers)
    assert seen["fast"] > 3 * seen["slow"], seen


def test_ip_hash_keeps_a_client_on_one_peer(gateway: Factory, backends) -> None:
    bs = [backends(f"i{i}") for i in range(3)]
    gw = gateway(
        {"carts": {"balance": "ip_hash"}}, {"carts": {"peers": [peer(b.port) for b in bs]}}
    )
    seen = who_answers(gw.url("carts"), 30)
    assert len(seen) == 1, seen
    (first,) = seen
    # the peer is drained: the client moves, and only while it is away
    others = [peer(b.port) if b.name != first else peer(b.port, weight=0) for b in bs]
    assert (
        gw.feed.push({"generation": 2, "services": {"carts": {"peers": others}}}).status_code == 200
    )
    gw.converged(2)
    moved = who_answers(gw.url("carts"), 20)
    assert len(moved) == 1 and first not in moved, moved
    back = [peer(b.port) for b in bs]
    assert (
        gw.feed.push({"generation": 3, "services": {"carts": {"peers": back}}}).status_code == 200
    )
    gw.converged(3)
    assert who_answers(gw.url("carts"), 10) == Counter({first: 10})


def test_ipv6_peers_are_reached(gateway: Factory) -> None:
    import socket
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("X-Backend", "v6")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = V6(("::1", 0), Handler)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        gw = gateway({"carts": {}}, {"carts": {"peers": [peer(port, host="0:0::1")]}}, workers=1)
        assert who_answers(gw.url("carts"), 5) == Counter({"v6": 5})
        assert tried(gw.url("carts"), 1) == [f"[::1]:{port}"]
    finally:
        server.shutdown()
        server.server_close()


def test_boot_snapshot_and_reload_never_go_back(gateway: Factory, backends, workdir: Path) -> None:
    a, b, c = backends("a"), backends("b"), backends("c")
    snapshot = workdir / "endpoints.json"
    snapshot.write_text(
        json.dumps({"generation": 50, "services": {"carts": {"peers": [peer(b.port)]}}})
    )
    snapshot.chmod(0o600)  # the sidecar's file: read by the master (root), not by workers
    gw = gateway(
        {"carts": {}},
        {"carts": {"peers": [peer(a.port)]}},  # the plan, rendered long before (generation 1)
        generation=1,
        snapshot=snapshot,
        workers=2,
    )
    assert who_answers(gw.url("carts"), 10) == Counter({"b": 10}), "the snapshot, not the plan"
    assert gw.feed.status()["generation"] == 50
    assert all(uid_of(pid) != 0 for pid in gw.workers()), "workers run as nobody"
    # nginx restarted alone (no sidecar, no push): the snapshot again
    gw.stop()
    gw.start()
    assert who_answers(gw.url("carts"), 10) == Counter({"b": 10})
    # a newer push, then a HUP: the shared dict keeps generation 60 over the older snapshot
    r = gw.feed.push({"generation": 60, "services": {"carts": {"peers": [peer(c.port)]}}})
    assert r.status_code == 200
    gw.converged(60)
    old = gw.workers()
    assert gw.nginx is not None and gw.nginx.proc is not None
    os.kill(gw.master_pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (gw.workers() & old or len(gw.workers()) < 2):
        time.sleep(0.05)
    assert not gw.workers() & old, "the reload replaced the workers"
    assert gw.feed.status()["generation"] == 60
    assert who_answers(gw.url("carts"), 10) == Counter({"c": 10})
    gw.converged(60)
    assert "services from pushes kept: 1" in gw.error_log()


def test_the_journal_applies_over_the_boot_snapshot_and_a_torn_tail_is_ignored(
    gateway: Factory, backends, workdir: Path
) -> None:
    """nginx started on a snapshot and its journal (as deploy/journal.py writes them):
    the records above the snapshot apply in order, a service the config lacks skipped; a
    bad record ends the replay (what follows it never served without it), as a last one
    cut short by a crash does; both are logged, and nginx starts."""
    from nginxgen.deploy.feed import snapshot_generation
    from nginxgen.deploy.journal import frame, header

    a, b, c = backends("a"), backends("b"), backends("c")
    snapshot = workdir / "endpoints.json"
    snapshot.write_text(
        json.dumps({"generation": 50, "services": {"carts": {"peers": [peer(a.port)]}}})
    )

    def record(gen: int, services: dict[str, Any]) -> bytes:
        return frame(json.dumps({"generation": gen, "services": services}).encode())

    journal = workdir / "endpoints.json.journal"
    journal.write_bytes(
        header(50)
        + record(51, {"carts": {"peers": [peer(b.port)]}})
        + record(52, {"gone": {"peers": [peer(a.port)]}, "users": {"peers": [peer(b.port)]}})
        + record(53, {"carts": {"peers": [{"host": "evil name", "port": 1}]}})
        + record(54, {"carts": {"peers": [peer(c.port)]}})
        + record(55, {"carts": {"peers": [peer(a.port)]}})[:-9]  # the sidecar died here
    )
    gw = gateway(
        {"carts": {}, "users": {}},
        {"carts": {"peers": [peer(a.port)]}},
        generation=1,
        snapshot=snapshot,
        workers=2,
    )
    assert who_answers(gw.url("carts"), 10) == Counter({"b": 10}), "up to the bad record"
    assert who_answers(gw.url("users"), 4) == Counter({"b": 4})
    assert gw.feed.status()["generation"] == 52
    log = gw.error_log()
    assert "2 record(s) applied, up to generation 52" in log
    assert "record 3 refused: " in log and "a record cut short" in log
    # The sidecar stops at the same place for a record that is no push document; one
    # whose content only schema.lua refuses it counts (high side: adopt.py then trusts
    # no snapshot and pushes every service).
    assert snapshot_generation(str(snapshot)) == 54
    assert "names 1 service(s) this config does not have" in log
    # Restarted once the sidecar started a new snapshot (generation 60, b) but died
    # before starting its journal: the old journal continues another snapshot.
    gw.stop()
    snapshot.write_text(
        json.dumps({"generation": 60, "services": {"carts": {"peers": [peer(b.port)]}}})
    )
    gw.start()
    assert who_answers(gw.url("carts"), 10) == Counter({"b": 10})
    assert gw.feed.status()["generation"] == 60
    assert "continues generation 50, not the snapshot's 60; ignored" in gw.error_log()
    # No journal at all is silent; one that cannot be read is said, and nginx starts.
    assert "cannot read" not in gw.error_log()
    gw.stop()
    journal.unlink()
    gw.start()
    assert gw.feed.status()["generation"] == 60
    assert "cannot read" not in gw.error_log()
    gw.stop()
    journal.mkdir()  # io.open succeeds, the read fails (root reads a mode-0 file)
    gw.start()
    assert who_answers(gw.url("carts"), 4) == Counter({"b": 4})
    assert f"cannot read {journal}: " in gw.error_log()


def test_a_reload_with_a_broken_plan_keeps_the_old_config(gateway: Factory, backends) -> None:
    """nginx -t does not run init_by_lua: a bad plan shows only at reload, where the
    master refuses the new config and the old workers keep serving."""
    a = backends("a")
    gw = gateway({"carts": {}}, {"carts": {"peers": [peer(a.port)]}}, workers=1)
    pids = gw.workers()
    gw.write({"carts": {"balance": "bogus"}}, {"carts": {"peers": [peer(a.port)]}}, 2)
    os.kill(gw.master_pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "nginxgen.endpoints.init" not in gw.error_log():
        time.sleep(0.05)
    assert "nginxgen.endpoints.init: plan:" in gw.error_log()
    assert gw.workers() == pids
    assert who_answers(gw.url("carts"), 5) == Counter({"a": 5})
