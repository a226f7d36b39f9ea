"""nginx.endpoints: dynamic — `nginxgen watch` pushes endpoint changes to the Lua balancer
of a real nginx, with real backends, and reloads only for what needs one.

Reloads are counted by nginx's own worker PIDs (a reload replaces every worker), not only
by nginxgen's counters.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from nginxgen.deploy.journal import frame, parse
from tests.helpers import Backend, Client, WatchedGateway, nginx_workers, run_cli, who_answers
from tests.helpers import poll_until as eventually
from tests.helpers.snapshot import boot_endpoints

pytestmark = pytest.mark.requires("nginx-lua")


def write_registry(directory: Path, services: dict[str, Any]) -> None:
    """Replace services.yaml atomically, as a registry agent would."""
    tmp = directory / ".services.yaml.tmp"
    tmp.write_text(yaml.safe_dump({"services": services}))
    os.replace(tmp, directory / "services.yaml")


def app(*members: tuple[Backend, int] | Backend, **fields: Any) -> dict[str, Any]:
    out = []
    for m in members:
        backend, weight = m if isinstance(m, tuple) else (m, 1)
        out.append({"id": backend.name, "address": backend.address, "weight": weight, **fields})
    return {"app": out}


def master_pid(gw: WatchedGateway) -> int:
    return int((gw.dir / "nginx.pid").read_text())


def workers(gw: WatchedGateway) -> set[int]:
    return nginx_workers(master_pid(gw))


def feed_token(gw: WatchedGateway) -> str:
    return (gw.dir / "nginxgen-endpoints.token").read_text().strip()


def status_listen(gw: WatchedGateway) -> str:
    return str(yaml.safe_load(gw.spec.read_text())["nginx"]["status_listen"])


def feed_status(gw: WatchedGateway, service: str | None = None) -> dict[str, Any]:
    r = requests.get(
        f"http://{status_listen(gw)}/nginxgen/endpoints/status",
        params={"service": service} if service else None,
        headers={"Authorization": f"Bearer {feed_token(gw)}"},
        timeout=5,
    )
    r.raise_for_status()
    return dict(r.json())


def share(seen: Counter[str], name: str) -> float:
    return seen[name] / sum(seen.values())


@pytest.fixture
def dynamic_gateway(watched_gateway):
    def make(services: dict[str, Any], **kwargs: Any) -> WatchedGateway:
        watch = {"push_debounce": {"min": "20ms", "max": "200ms"}, **kwargs.pop("watch", {})}
        gw = watched_gateway(services, watch=watch, worker_processes=2, **kwargs)
        eventually(lambda: len(workers(gw)) == 2, 20, "two workers")
        return gw

    return make


def test_traffic_moves_to_a_new_instance_without_a_reload(dynamic_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app(a))
    conf = gw.conf.read_text()
    assert "server 0.0.0.1;" in conf and "balancer_by_lua_block" in conf
    assert a.address not in conf.split("init_by_lua_block")[0], "no server lines"
    assert gw.serves_only("a")
    master, pids = master_pid(gw), workers(gw)
    reloads = gw.metric("nginxgen_reloads_total")
    # A long-lived connection, open across the change: a reload would close it.
    held = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    held.request("GET", "/")
    assert held.getresponse().read() is not None
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    held.request("GET", "/")
    r = held.getresponse()
    assert r.status == 200 and r.getheader("X-Backend") == "b", "the connection survived"
    held.close()
    assert master_pid(gw) == master and workers(gw) == pids, "no reload: same workers"
    assert gw.metric("nginxgen_reloads_total") == reloads
    # The change (the start pushed nothing: nginx served the snapshot of the plan); it is
    # counted once every worker confirmed it, which can come after b's first answer.
    eventually(lambda: gw.metric('nginxgen_pushes_total{result="confirmed"}') >= 1, 20, "confirmed")
    assert f"pushed: servers added: app {b.address}" in gw.logs()
    assert f"servers removed: app {a.address} (registry changed; no reload)" in gw.logs()
    # Where the time went, stage by stage, from the change being noticed.
    line = next(x for x in gw.logs().splitlines() if f"pushed: servers added: app {b.address}" in x)
    stages = json.loads(line.split(" stages_ms=", 1)[1].split("}", 1)[0] + "}")
    assert list(stages) == ["debounce", "read", "plan", "post", "confirm", "snapshot"]
    assert all(ms >= 0 for ms in stages.values()), stages
    status = feed_status(gw)
    assert status["converged"] and {w["pid"] for w in status["workers"]} == pids
    # The boot snapshot and its journal hold what serves, for a restart of nginx alone.
    generation, boot = boot_endpoints(gw.dir / "nginxgen-endpoints.json")
    assert generation == status["generation"]
    assert [p["port"] for p in boot["app"]["peers"]] == [b.port]
    assert gw.stop_watch() == 0


def test_weights_warm_up_and_drain_are_pushed_exactly(dynamic_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app((a, 1), (b, 3)))
    pids = workers(gw)
    eventually(lambda: len(who_answers(gw.url, 8)) == 2, 10, "both peers")
    seen = who_answers(gw.url, 2000)
    assert abs(share(seen, "a") - 0.25) <= 0.02, seen
    # A warm-up step is a weight: 3 against 10 (30 % of a's weight of 10).
    write_registry(gw.dir, app((a, 3), (b, 10)))
    eventually(lambda: feed_status(gw, "app")["peers"][0]["weight"] == 3, 10, "the step")
    seen = who_answers(gw.url, 2000)
    assert abs(share(seen, "a") - 3 / 13) <= 0.02, seen
    # Draining takes a out of new requests; it is gone from the endpoint set.
    services = app(a, b)
    services["app"][0]["state"] = "draining"
    write_registry(gw.dir, services)
    eventually(lambda: len(feed_status(gw, "app")["peers"]) == 1, 10, "the drain")
    assert who_answers(gw.url, 50) == Counter({"b": 50})
    assert workers(gw) == pids, "weights, warm-up and drain without a reload"
    assert gw.stop_watch() == 0


def test_nobody_alive_answers_503_and_a_return_is_a_push(dynamic_gateway, backends):
    a = backends("a")
    gw = dynamic_gateway(app(a))
    pids = workers(gw)
    write_registry(gw.dir, app(a, state="down"))  # not an emptying the guard would hold
    # Every worker, not only the first to apply the push (each applies within its own timer).
    eventually(lambda: who_answers(gw.url, 12, fresh=True) == Counter({"HTTP 503": 12}), 10, "503")
    r = requests.get(gw.url, timeout=5)
    assert r.json() == {"error": "service unavailable", "service": "app"}
    assert r.headers["Retry-After"] == "5" and r.headers["X-Request-ID"]
    write_registry(gw.dir, app(a))
    eventually(lambda: gw.serves_only("a"), 10, "back on a")
    assert workers(gw) == pids
    assert gw.stop_watch() == 0


def test_the_503_carries_the_routes_cors_and_response_headers(dynamic_gateway, backends):
    # A browser app reads a 503 only with its Access-Control-Allow-Origin: the route's
    # error_page 500 goes to a page of its own holding the route's add_header lines.
    a = backends("a")
    cors = {"origins": ["https://app.test"], "expose_headers": ["X-Count"]}
    routes = [
        {"path": "/c/", "service": "app", "cors": cors},
        {"path": "/h/", "service": "app", "headers": {"response": {"set": {"X-Route": "h"}}}},
        {"path": "/", "service": "app"},
    ]
    gw = dynamic_gateway(app(a), extra={"routes": routes})
    assert "error_page 500 = @nginxgen_503_0;" in gw.conf.read_text()
    write_registry(gw.dir, app(a, state="down"))
    eventually(lambda: who_answers(gw.url, 12, fresh=True) == Counter({"HTTP 503": 12}), 10, "503")
    origin = {"Origin": "https://app.test"}
    for _ in range(4):  # on both workers (fresh connections: the 503 closes keep-alive)
        r = requests.get(f"{gw.url}c/x", headers=origin, timeout=5)
        assert r.status_code == 503 and r.json() == {
            "error": "service unavailable",
            "service": "app",
        }
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.test"
        assert r.headers["Access-Control-Expose-Headers"] == "X-Count"
        assert r.headers["Vary"] == "Origin" and r.headers["Retry-After"] == "5"
        assert r.headers["X-Request-ID"]
        r = requests.get(f"{gw.url}h/x", timeout=5)
        assert r.status_code == 503 and r.headers["X-Route"] == "h" and r.headers["X-Request-ID"]
    # An origin the route does not list gets no CORS header, as on its other answers.
    r = requests.get(f"{gw.url}c/x", headers={"Origin": "https://evil.test"}, timeout=5)
    assert r.status_code == 503 and "Access-Control-Allow-Origin" not in r.headers
    # A preflight is answered at the gateway, never proxied: 204 whoever is alive.
    pre = {**origin, "Access-Control-Request-Method": "GET"}
    r = requests.options(f"{gw.url}c/x", headers=pre, timeout=5)
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "https://app.test"
    # A route without CORS or headers is as before: the server's page, the server's headers.
    r = requests.get(gw.url, headers=origin, timeout=5)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5" and r.headers["X-Request-ID"]
    assert not any(k.lower().startswith("access-control-") for k in r.headers)
    assert "X-Route" not in r.headers
    write_registry(gw.dir, app(a))
    eventually(lambda: gw.serves_only("a"), 10, "back on a")
    r = requests.get(f"{gw.url}c/x", headers=origin, timeout=5)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.test"
    assert gw.stop_watch() == 0


def test_a_backends_own_500_passes_through_unchanged(dynamic_gateway, backends):
    # The route's error_page 500 answers the balancer's refusal (nobody to serve); a 500
    # the backend sent is its answer, not nginx's, and reaches the client as it was.
    a = backends("a")
    a.status, a.body = 500, b'{"backend":"a","failed":true}'
    gw = dynamic_gateway(app(a))
    r = requests.get(gw.url, timeout=5)
    assert r.status_code == 500 and r.content == a.body
    assert r.headers["X-Backend"] == "a" and "Retry-After" not in r.headers
    assert gw.stop_watch() == 0


def test_the_feed_is_on_loopback_only_and_its_token_nowhere(dynamic_gateway, backends):
    a = backends("a")
    gw = dynamic_gateway(app(a))
    token = feed_token(gw)
    mode = (gw.dir / "nginxgen-endpoints.token").stat().st_mode & 0o777
    assert mode == 0o600
    assert token not in gw.conf.read_text() and token not in gw.logs()
    bad = {"generation": 10**13, "services": {"app": {"peers": []}}}
    before = feed_status(gw)["generation"]
    # The public listener has no feed: the path is just a route to the backend.
    r = requests.post(
        f"{gw.url}nginxgen/endpoints",
        json=bad,
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert r.headers.get("X-Backend") == "a" and "generation" not in r.text
    assert feed_status(gw)["generation"] == before and gw.serves_only("a")
    # The status listener wants the token.
    r = requests.post(
        f"http://{status_listen(gw)}/nginxgen/endpoints",
        json=bad,
        headers={"Authorization": "Bearer not-the-token-at-all"},
        timeout=5,
    )
    assert r.status_code == 401 and gw.serves_only("a")
    assert gw.stop_watch() == 0


def test_a_refused_push_falls_back_to_a_reload(dynamic_gateway, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = dynamic_gateway(app(a))
    token = feed_token(gw)
    # Someone pushed a generation far ahead of the sidecar's: its next push is stale (409).
    ahead = {"generation": 9 * 10**13, "services": {"app": {"peers": []}}}
    r = requests.post(
        f"http://{status_listen(gw)}/nginxgen/endpoints",
        json={**ahead, "services": {"app": {"peers": [{"host": "127.0.0.1", "port": a.port}]}}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert r.status_code == 200, r.text
    pids = workers(gw)
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 20, "traffic on b after the fallback reload")
    eventually(lambda: not workers(gw) & pids, 20, "the reload replaced the workers")
    assert gw.metric('nginxgen_pushes_total{result="refused"}') >= 1
    assert "not newer than the current generation" in gw.logs()
    assert "reloading instead" in gw.logs()
    # The sidecar now counts above what nginx holds: the next change is a push again.
    pids = workers(gw)
    write_registry(gw.dir, app(c))
    eventually(lambda: gw.serves_only("c"), 20, "traffic on c")
    assert workers(gw) == pids
    # A rotated token: the push is refused (401), the reload renders the new digest.
    (gw.dir / "nginxgen-endpoints.token").write_text("rotated-" + "x" * 40 + "\n")
    write_registry(gw.dir, app(a))
    eventually(lambda: gw.serves_only("a"), 20, "traffic on a after the token rotation")
    assert "missing or wrong token" in gw.logs()
    assert gw.stop_watch() == 0


def test_registry_outage_keeps_serving_the_pushed_endpoints(dynamic_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app(a), watch={"resync": "500ms"})
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    client = Client(gw.url)
    client.start()
    try:
        (gw.dir / "services.yaml").unlink()
        eventually(lambda: gw.healthz()[0] == 503, 20, "stale health")
        assert gw.serves_only("b")
    finally:
        client.stop()
    assert client.failures == []
    assert gw.stop_watch() == 0


def test_nginx_restarted_alone_serves_the_last_pushed_endpoints(dynamic_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app(a))
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    assert gw.stop_watch() == 0
    (gw.dir / "services.yaml").unlink()  # and the registry is gone too
    gw.nginx.stop()
    gw.nginx.start(gw.port)
    # nginx.conf still holds the endpoints it was rendered with (a); the snapshot wins.
    eventually(lambda: gw.serves_only("b"), 10, "the snapshot serves")


# Services beside `app`, so that a change of app is a small share of the snapshot: its
# push is a journal record, and only every few pushes is the snapshot rewritten.
FILLERS = {
    f"f{i}": [{"id": f"f{i}-{n}", "address": f"10.9.{i}.{n}:80"} for n in (1, 2, 3)]
    for i in range(20)
}
FILLER_ROUTES = [{"path": "/", "service": "app"}] + [
    {"path": f"/{name}/", "service": name} for name in FILLERS
]


def journal_gateway(dynamic_gateway, *members: Backend) -> WatchedGateway:
    # flap off: these tests move app back and forth on purpose
    services = {**app(*members), **FILLERS}
    return dynamic_gateway(services, extra={"routes": FILLER_ROUTES}, watch={"flap": "off"})


def push_and_persist(gw: WatchedGateway, backend: Backend) -> int:
    """Move app to `backend`; wait until it serves and is persisted (snapshot + journal).
    Returns the snapshot file's inode then (a rewrite renames a new file into place)."""
    write_registry(gw.dir, {**app(backend), **FILLERS})
    eventually(
        lambda: gw.serves_only(backend.name), 20, f"traffic on {backend.name}", detail=gw.logs
    )
    snapshot = gw.dir / "nginxgen-endpoints.json"

    def persisted() -> bool:
        gen, boot = boot_endpoints(snapshot)
        ports = [p["port"] for p in boot["app"]["peers"]]
        return ports == [backend.port] and gen == feed_status(gw)["generation"]

    eventually(persisted, 20, f"{backend.name} persisted", detail=gw.logs)
    return snapshot.stat().st_ino


def restart_nginx_alone(gw: WatchedGateway) -> None:
    assert gw.stop_watch() == 0
    (gw.dir / "services.yaml").unlink()  # and the registry is gone too
    gw.nginx.stop()
    gw.nginx.start(gw.port)


def test_nginx_restarted_after_pushes_serves_the_journal(dynamic_gateway, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = journal_gateway(dynamic_gateway, a)
    snapshot = gw.dir / "nginxgen-endpoints.json"
    journal = gw.dir / "nginxgen-endpoints.json.journal"
    eventually(journal.exists, 10, "the watcher's snapshot and its journal")
    started = snapshot.stat().st_ino
    assert push_and_persist(gw, b) == started
    assert push_and_persist(gw, c) == started, "two pushes: journal records only"
    records = parse(journal.read_bytes())
    assert records is not None and len(records.payloads) == 2
    assert json.loads(records.payloads[-1])["services"].keys() == {"app"}, "the delta only"
    generation = feed_status(gw)["generation"]
    assert json.loads(snapshot.read_text())["generation"] < generation
    pids = workers(gw)
    restart_nginx_alone(gw)
    assert not workers(gw) & pids, "a new nginx"
    # nginx.conf and the snapshot hold a; the journal b, then c.
    eventually(lambda: gw.serves_only("c"), 10, "the journal's last record serves")
    assert feed_status(gw)["generation"] == generation
    # A crash mid-write of the next record: nginx starts and serves the last whole one.
    with open(journal, "ab") as fh:
        fh.write(frame(json.dumps({"generation": generation + 1, "services": {}}).encode())[:-3])
    gw.nginx.stop()
    gw.nginx.start(gw.port)
    eventually(lambda: gw.serves_only("c"), 10, "the last whole record serves")
    assert feed_status(gw)["generation"] == generation
    assert "a record cut short" in gw.nginx.errors()


def test_a_change_that_moves_no_endpoint_keeps_the_journal(dynamic_gateway, backends):
    """A tag-only registry change: the plan that serves changes, no push carries it; the
    next push is still one journal record, not the whole snapshot rewritten."""
    a, b = backends("a"), backends("b")
    gw = journal_gateway(dynamic_gateway, a)
    snapshot = gw.dir / "nginxgen-endpoints.json"
    eventually((gw.dir / "nginxgen-endpoints.json.journal").exists, 10, "the journal")
    started = push_and_persist(gw, b)
    write_registry(gw.dir, {**app(b, tags=["v2"]), **FILLERS})
    time.sleep(1.0)  # the watcher's pass over the tag change (nothing to see from outside)
    assert push_and_persist(gw, a) == started, "a record, not a rewrite"
    records = parse((gw.dir / "nginxgen-endpoints.json.journal").read_bytes())
    assert records is not None and len(records.payloads) == 2
    assert snapshot.stat().st_ino == started


def test_nginx_restarted_after_the_journal_was_compacted_serves_the_last_push(
    dynamic_gateway, backends
):
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = journal_gateway(dynamic_gateway, a)
    snapshot = gw.dir / "nginxgen-endpoints.json"
    eventually((gw.dir / "nginxgen-endpoints.json.journal").exists, 10, "the journal")
    inodes = [snapshot.stat().st_ino]
    for i in range(16):  # a quarter of the snapshot holds a few of app's records
        inodes.append(push_and_persist(gw, (b, c)[i % 2]))
        if len(set(inodes)) >= 2 and inodes[-1] == inodes[-2]:
            break  # rewritten, and a record after that
    assert len(set(inodes)) >= 2, "the snapshot was rewritten once the journal filled"
    assert inodes[-1] == inodes[-2], "and a journal record followed"
    last = (b, c)[(len(inodes) - 2) % 2]
    generation = feed_status(gw)["generation"]
    restart_nginx_alone(gw)
    eventually(lambda: gw.serves_only(last.name), 10, "the last push serves")
    assert feed_status(gw)["generation"] == generation
    assert "journal" not in gw.nginx.errors(), "no record was skipped"


def test_a_new_route_still_reloads(dynamic_gateway, backends):
    a = backends("a")
    gw = dynamic_gateway(app(a))
    pids = workers(gw)
    spec = yaml.safe_load(gw.spec.read_text())
    spec["routes"].append({"path": "/other/", "service": "app"})
    gw.spec.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert gw.proc is not None
    gw.proc.send_signal(1)  # SIGHUP: the spec is read again
    eventually(lambda: not workers(gw) & pids, 20, "a reload for the new route")
    assert who_answers(gw.url + "other/x", 3) == Counter({"a": 3})
    eventually(lambda: gw.metric('nginxgen_reloads_total{reason="spec"}') == 1, 10, "counted")
    assert gw.stop_watch() == 0


def test_stream_upstreams_stay_static(dynamic_gateway, backends):
    a = backends("a")
    port = _free_port()
    gw = dynamic_gateway(
        {**app(a), "tcp": [{"id": "t", "address": a.address}]},
        extra={"streams": [{"listen": f"127.0.0.1:{port}", "service": "tcp"}]},
    )
    conf = gw.conf.read_text()
    stream = conf.split("stream {", 1)[1]
    assert f"server {a.address}" in stream and "balancer_by_lua" not in stream
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert b"200" in s.recv(100)
    assert gw.stop_watch() == 0


def _free_port() -> int:
    from tests.helpers import free_port

    return free_port()


def test_thousand_endpoint_changes_under_load_never_reload(dynamic_gateway, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    # Flap damping and warm-up off: this test flips instances in and out on purpose, every
    # 12 ms, and checks exact weights at the end (a returning instance would ramp up).
    watch = {"push_debounce": {"min": "5ms", "max": "50ms"}, "flap": "off"}
    gw = dynamic_gateway(app(a, b), watch=watch, extra={"defaults": {"warmup": "off"}})
    pids, master = workers(gw), master_pid(gw)
    reloads = gw.metric("nginxgen_reloads_total")
    client = Client(gw.url, limit=200_000)
    client.start()
    kinds = [
        app(a, b),
        app(a, b, c),  # add
        app(b, c),  # remove
        app((a, 3), (b, 10)),  # weight change / warm-up step
        app(a, (b, 5), c),
        {"app": app(a, b)["app"] + [{**app(c)["app"][0], "state": "draining"}]},  # drain
    ]
    try:
        for i in range(1000):
            write_registry(gw.dir, kinds[i % len(kinds)])
            time.sleep(0.012)
        write_registry(gw.dir, app((a, 7), b))

        def final() -> bool:
            peers = feed_status(gw, "app")["peers"]
            return sorted((p["port"], p["weight"]) for p in peers) == sorted(
                [(a.port, 7), (b.port, 1)]
            )

        eventually(final, 20, "the last change serves", detail=lambda: gw.logs()[-3000:])
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert workers(gw) == pids and master_pid(gw) == master, "0 reloads"
    assert gw.metric("nginxgen_reloads_total") == reloads
    assert gw.metric('nginxgen_pushes_total{result="confirmed"}') >= 50
    assert gw.stop_watch() == 0


def test_back_to_the_rendered_endpoints_is_still_a_push(dynamic_gateway, backends):
    """nginx.conf was rendered with a; b was pushed since. When the registry and a SIGHUP
    bring back exactly the rendered text, the workers still hold b: watch pushes a."""
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app(a))
    rendered = gw.conf.read_text()
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    assert gw.conf.read_text() == rendered, "a push does not rewrite nginx.conf"
    write_registry(gw.dir, app(a))
    assert gw.proc is not None
    gw.proc.send_signal(1)
    eventually(lambda: gw.serves_only("a"), 10, "traffic back on a")
    assert gw.stop_watch() == 0


def _unchanged(gw: WatchedGateway, master: int, pids: set[int]) -> None:
    assert master_pid(gw) == master and workers(gw) == pids, "no reload: same workers"


def test_a_sidecar_restart_pushes_what_moved_without_a_reload(dynamic_gateway, backends):
    """The installed nginx.conf holds a; the watcher pushed b; while it was stopped the
    registry moved on to c. The next watcher keeps the config and pushes c."""
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = dynamic_gateway(app(a))
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    assert gw.stop_watch() == 0
    master, pids = master_pid(gw), workers(gw)
    write_registry(gw.dir, app(c))
    gw.start_watch()
    eventually(lambda: gw.serves_only("c"), 10, "traffic on c")
    _unchanged(gw, master, pids)
    assert gw.metric('nginxgen_reloads_total{reason="start"}') == 0
    assert gw.metric("nginxgen_reloads_total") == 0
    assert gw.metric('nginxgen_pushes_total{result="confirmed"}') == 1
    assert "kept: nginx serves" in gw.logs() and "first config of this run" in gw.logs()
    assert gw.healthz()[0] == 200
    # and it carries on: the next change is a push
    write_registry(gw.dir, app(a))
    eventually(lambda: gw.serves_only("a"), 10, "traffic on a")
    _unchanged(gw, master, pids)
    assert gw.stop_watch() == 0


def test_a_restart_corrects_against_what_serves_not_the_installed_file(dynamic_gateway, backends):
    """Back to the installed file's endpoints (a) while the sidecar was down: the file's
    text matches again, but the workers hold b (the snapshot): a is pushed."""
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app(a))
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    assert gw.stop_watch() == 0
    master, pids = master_pid(gw), workers(gw)
    write_registry(gw.dir, app(a))
    gw.start_watch()
    eventually(lambda: gw.serves_only("a"), 10, "traffic back on a")
    _unchanged(gw, master, pids)
    assert gw.metric("nginxgen_reloads_total") == 0
    assert gw.metric('nginxgen_pushes_total{result="confirmed"}') == 1
    assert gw.stop_watch() == 0


def test_once_next_to_a_running_watcher_does_not_reload(dynamic_gateway, backends):
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = dynamic_gateway(app(a))
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    master, pids = master_pid(gw), workers(gw)
    once = run_cli("watch", "-c", str(gw.spec), "--once")
    assert once.returncode == 0, once.stderr
    assert "kept: nginx serves" in once.stderr and "reloaded" not in once.stderr
    _unchanged(gw, master, pids)
    assert gw.healthz()[0] == 200, gw.healthz()
    # The running watcher keeps pushing, and stays healthy.
    write_registry(gw.dir, app(c))
    eventually(lambda: gw.serves_only("c"), 10, "traffic on c")
    _unchanged(gw, master, pids)
    assert gw.healthz()[0] == 200, gw.healthz()
    assert gw.metric("nginxgen_reloads_total") == 0
    assert gw.stop_watch() == 0


def test_a_new_service_while_the_sidecar_was_down_reloads_once(dynamic_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = dynamic_gateway(app(a))
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 10, "traffic on b")
    assert gw.stop_watch() == 0
    pids = workers(gw)
    spec = yaml.safe_load(gw.spec.read_text())
    spec["routes"].append({"path": "/other/", "service": "other"})
    gw.spec.write_text(yaml.safe_dump(spec, sort_keys=False))
    write_registry(gw.dir, {**app(b), "other": [{"id": "a", "address": a.address}]})
    gw.start_watch()
    eventually(lambda: not workers(gw) & pids, 20, "a reload for the new service")
    assert who_answers(gw.url + "other/x", 3) == Counter({"a": 3})
    assert gw.serves_only("b")
    assert gw.metric('nginxgen_reloads_total{reason="start"}') == 1
    assert gw.healthz()[0] == 200
    assert gw.stop_watch() == 0
