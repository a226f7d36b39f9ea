"""Traffic policies through a running `nginxgen watch`: real nginx, real backends, the file
registry. The watch process itself steps warm-up ramps, probes, and drains."""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import requests
import yaml

from nginxgen.deploy.confirm import serving_generation
from nginxgen.render import config_generation
from tests.helpers import Client, WatchedGateway, who_answers
from tests.helpers import nginx_workers as workers
from tests.helpers import poll_until as eventually
from tests.integration.test_watch import app, write_registry

# Warm-up period. Each step must outlast the watch process's reaction (registry poll,
# debounce, nginx -t, reload: under 1 s idle, 2 s at a load of 8 on 2 cores) plus one
# sample (0.2 s), and the sidecar's restart after step 2 (2 s idle, 7 s and more at that
# load) must end before the last step, so that the new process takes a warm-up step itself.
PERIOD = 6.0
BURST = 42  # requests per sample: whole cycles of the 1:4 .. 3:4 round robins


@pytest.fixture
def watched_gateway(watched_gateway):
    """These tests are about the reload path (they count reloads or read server lines):
    endpoints: reload. tests/integration/test_dynamic_endpoints.py has the push path."""
    return functools.partial(watched_gateway, endpoints="reload")


def status_listen(gw: WatchedGateway) -> str:
    return str(yaml.safe_load(gw.spec.read_text())["nginx"]["status_listen"])


def serving_servers(gw: WatchedGateway) -> set[str]:
    """Addresses in the upstream of the installed config, once nginx serves it (else {})."""
    text = gw.conf.read_text()
    if serving_generation(status_listen(gw)) != config_generation(text):
        return set()
    return set(re.findall(r"server (127\.0\.0\.1:\d+) weight=", text))


def settled_on(gw: WatchedGateway, servers: set[str]) -> bool:
    """The config with `servers` answers five status requests in a row: old workers keep
    accepting for a moment after a reload, and one answer does not show they stopped."""
    return all(serving_servers(gw) == servers for _ in range(5))


def sample(gw: WatchedGateway, b_address: str) -> tuple[tuple[int, int], Counter[str]] | None:
    """(a's weight, b's weight) and who answered BURST requests, when one config served
    them all: the installed file, the generation answering, and the single worker were
    the same before and after (a reload in between spoils the sample)."""
    assert gw.nginx.proc is not None
    master = gw.nginx.proc.pid
    text = gw.conf.read_text()
    before = workers(master)
    if len(before) != 1 or serving_generation(status_listen(gw)) != config_generation(text):
        return None
    seen = who_answers(gw.url, BURST, fresh=True)
    if gw.conf.read_text() != text or workers(master) != before:
        return None
    servers = dict(re.findall(r"server (127\.0\.0\.1:\d+) weight=(\d+)", text))
    if b_address not in servers:
        return None
    a_weight = next(int(w) for addr, w in servers.items() if addr != b_address)
    return (a_weight, int(servers[b_address])), seen


def test_warmup_steps_through_the_watch_process_and_a_restart_keeps_the_ramp(
    watched_gateway, backends
):
    a, b = backends("a"), backends("b")
    warmup = {"step_percent": 25, "period": f"{PERIOD:g}s"}
    gw = watched_gateway(app(a), extra={"defaults": {"warmup": warmup}}, worker_processes=1)
    state_file = gw.dir / "nginxgen-state.json"
    assert gw.serves_only("a")

    shares: dict[tuple[int, int], Counter[str]] = {}
    order: list[tuple[int, int]] = []  # configs in the order they served

    def collect_until(config: tuple[int, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while sum(shares.get(config, Counter()).values()) < BURST:
            assert time.monotonic() < deadline, f"never sampled {config}; saw {order}"
            got = sample(gw, b.address)
            if got is None:
                time.sleep(0.02)
                continue
            weights, seen = got
            shares.setdefault(weights, Counter()).update(seen)
            if not order or order[-1] != weights:
                order.append(weights)

    write_registry(gw.dir, app(a, b))
    collect_until((4, 2), 2 * PERIOD + 20)  # step 1 (25 %), then the watch process: 50 %
    assert order[:2] == [(4, 1), (4, 2)], order
    assert gw.metric('nginxgen_reloads_total{reason="warmup"}') >= 1
    assert gw.metric("nginxgen_instances_warming_up") == 1
    assert "(warm-up step)" in gw.logs()
    first_seen = json.loads(state_file.read_text())["instances"][f"app/b@{b.address}"]

    # Restart the sidecar mid-ramp: the new process reads when it first saw b.
    assert gw.stop_watch() == 0
    restarted_at = len(gw.logs())
    gw.start_watch()
    ramp_age = datetime.now(timezone.utc) - datetime.fromisoformat(first_seen["first_seen"])
    assert ramp_age.total_seconds() < 3 * PERIOD, f"the restart outlasted step 3: {ramp_age}"
    before_restart = len(order)
    collect_until((1, 1), 3 * PERIOD + 20)
    after = order[before_restart:]
    assert (4, 1) not in after, order  # the ramp went on; it did not start again
    assert after[-1] == (1, 1)
    later = json.loads(state_file.read_text())["instances"][f"app/b@{b.address}"]
    assert later["first_seen"] == first_seen["first_seen"]
    assert gw.metric('nginxgen_reloads_total{reason="warmup"}') >= 1  # the new process's
    assert gw.metric("nginxgen_instances_warming_up") == 0
    assert "step 1 of 4" not in gw.logs()[restarted_at:]

    # Each step's share of traffic, measured through nginx: b / (a + b) by weight.
    fractions = [wb / (wa + wb) for wa, wb in order]
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions), order
    for (wa, wb), seen in shares.items():
        total = sum(seen.values())
        assert set(seen) <= {"a", "b"}, seen
        assert abs(seen["b"] / total - wb / (wa + wb)) < 0.07, (wa, wb, seen)
    print("warm-up through watch:", {f"{wb}/{wa + wb}": dict(c) for (wa, wb), c in shares.items()})
    assert gw.stop_watch() == 0


def test_pseudo_dead_instance_leaves_and_returns_through_the_watch_process(
    watched_gateway, backends
):
    a, b = backends("a"), backends("b")
    interval, fall = 0.2, 2
    probe = {"path": "/healthz", "interval": f"{interval}s", "timeout": "0.5s"}
    gw = watched_gateway(
        app(a, b), extra={"defaults": {"warmup": "off", "probe": {**probe, "fall": fall}}}
    )
    eventually(lambda: set(who_answers(gw.url, 10, fresh=True)) == {"a", "b"}, 20, "both serving")
    client = Client(gw.url)
    client.start()
    try:
        flipped = time.monotonic()
        a.health_status = 500  # the process answers; the application is sick
        eventually(lambda: serving_servers(gw) == {b.address}, 20, "a out of the upstream")
        left = time.monotonic() - flipped
        eventually(lambda: gw.serves_only("b", 10), 10, "old workers gone")
        reached_a = a.count
        assert who_answers(gw.url, 20, fresh=True) == Counter({"b": 20})
        assert a.count == reached_a  # neither these nor the client's requests reach a
        # fall x interval, the debounce (100 ms .. 1 s here), one reload; plus a busy machine
        assert left < fall * interval + 1.0 + 3.0, left
        assert gw.metric("nginxgen_instances_pseudo_dead") == 1
        assert gw.metric('nginxgen_reloads_total{reason="probe"}') >= 1
        assert "pseudo-dead after 2 failed probes" in gw.logs()
        assert "(health probes changed)" in gw.logs()
        print(f"pseudo-dead instance out of the upstream {left:.2f}s after its health failed")

        a.health_status = 200
        both = {a.address, b.address}
        eventually(lambda: serving_servers(gw) == both, 20, "a back in the upstream")
        eventually(lambda: a.count >= reached_a + 5, 20, "traffic at a again")
        assert gw.metric("nginxgen_instances_pseudo_dead") == 0

        a.health_status = b.health_status = 500  # everybody fails: keep serving with all
        eventually(lambda: gw.metric("nginxgen_instances_pseudo_dead") == 2, 20, "both dead")
        eventually(lambda: serving_servers(gw) == both, 20, "both kept in")
        counts = a.count, b.count
        eventually(lambda: a.count > counts[0] + 5 and b.count > counts[1] + 5, 20, "both serve")
        assert "every instance fails its health probe" in gw.logs()
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert gw.stop_watch() == 0


def test_draining_through_the_watch_process_finishes_requests_in_flight(watched_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(app(a, b), extra={"defaults": {"warmup": "off"}})
    a.delay = 5.0
    results: list[requests.Response] = []
    threads: list[threading.Thread] = []

    def slow() -> None:
        results.append(requests.get(gw.url + "slow", timeout=30))

    while a.count == 0:  # round robin: within a few requests one is in flight at a
        t = threading.Thread(target=slow)
        t.start()
        threads.append(t)
        eventually(lambda: a.count + b.count >= len(threads), 10, "request arrived")
    at_a = threads[-1]

    draining = app(a, state="draining")["app"] + app(b)["app"]
    write_registry(gw.dir, {"app": draining})

    eventually(lambda: settled_on(gw, {b.address}), 20, "the draining config serving")
    assert at_a.is_alive()  # the slow request was in flight across the reload
    assert who_answers(gw.url + "new", 30) == Counter({"b": 30})
    assert a.count == 1  # nothing new reached the draining instance
    for t in threads:
        t.join(30)
    assert [r.status_code for r in results] == [200] * len(threads)
    assert "a" in {r.headers["X-Backend"] for r in results}  # the slow one finished at a
    assert gw.metric('nginxgen_reloads_total{reason="registry"}') >= 1
    assert "(registry changed)" in gw.logs()
    assert gw.stop_watch() == 0
