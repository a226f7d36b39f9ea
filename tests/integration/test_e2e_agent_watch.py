"""The whole loop, as deployed: `nginxgen agent` next to each backend writes etcd, `nginxgen
watch` next to nginx follows etcd, and traffic goes where the agents say.

Real etcd, real nginx, real backends; agent and watch run as separate processes, the way
a container entrypoint and a sidecar would run them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.helpers import Backend, Client, Etcd, WatchedGateway, who_answers
from tests.helpers import poll_until as eventually
from tests.helpers.agent import AgentProcess

# Timings the tests run with; the bounds below are written in these terms.
HEALTH_INTERVAL = 0.2
FALL, RISE = 3, 2
TTL = 3.0
DEBOUNCE_MAX = 1.0
# Room for a loaded 2-core machine: process start, a reload, old workers leaving.
SLACK = 5.0


@pytest.fixture
def etcd_gateway(
    watched_gateway: Callable[..., WatchedGateway], etcd_server: Etcd
) -> Callable[..., WatchedGateway]:
    """Factory: nginx on a config rendered from etcd, kept in step by `nginxgen watch`."""

    def make(
        defaults: dict[str, Any] | None = None, nginx: dict[str, Any] | None = None, **watch: Any
    ) -> WatchedGateway:
        return watched_gateway(
            registry={"kind": "etcd", "url": etcd_server.url, "read_timeout": "2s"},
            watch={"debounce": {"min": "100ms", "max": f"{DEBOUNCE_MAX:g}s"}, **watch},
            # The ramp is tested elsewhere (unless `defaults` says otherwise); here a unit
            # that is up takes its full share.
            extra={"defaults": defaults or {"warmup": "off"}},
            **(nginx or {}),
        )

    return make


def start_agent(
    agents: Callable[..., AgentProcess], gw: WatchedGateway, backend: Backend, *extra: str
) -> AgentProcess:
    """One agent per backend, on the gateway's own spec (one `registry:` section for both)."""
    return agents(
        gw.spec,
        *("--service", "app", "--id", backend.name, "--address", backend.address),
        *("--ttl", f"{TTL:g}s", "--health-url", f"http://{backend.address}/healthz"),
        *("--health-interval", f"{HEALTH_INTERVAL:g}s", "--fall", str(FALL)),
        *("--rise", str(RISE), "--drain", "5s"),
        *extra,
    )


def serves(gw: WatchedGateway, *names: str, n: int = 12) -> bool:
    """Exactly these backends answer n requests between them (each at least once)."""
    return set(who_answers(gw.url, n, fresh=True)) == set(names)


def client_sees(client: Client, *names: str, timeout: float = 30) -> None:
    """The client's next requests reach each of these backends. (Polling through nginx
    beside a running client would not do: round robin may hand us always the same one.)"""
    mark = len(client.results)
    eventually(lambda: set(names) <= set(client.results[mark:]), timeout, f"traffic on {names}")


def state(etcd: Etcd, name: str) -> str | None:
    value, _ = etcd.get(f"/services/app/{name}")
    return value["state"] if value else None


def both_serving(gw: WatchedGateway) -> None:
    eventually(lambda: serves(gw, "a", "b"), 40, f"traffic on a and b; {gw.logs()[-1500:]}")


def test_agents_register_and_health_moves_units_in_and_out(
    etcd_gateway, etcd_server, agents, backends
):
    a, b = backends("a"), backends("b")
    gw = etcd_gateway()
    assert who_answers(gw.url, 2, fresh=True) == {"HTTP 503": 2}  # nobody registered yet
    agent_a = start_agent(agents, gw, a)
    start_agent(agents, gw, b)
    both_serving(gw)
    assert "now serving: app" in gw.logs(), gw.logs()  # in the spec, nobody until now

    client = Client(gw.url)
    client.start()
    try:
        # a's process keeps serving, but its health URL fails: the agent marks it down and
        # the gateway takes it out, without one failed request.
        a.health_status = 500
        failed_at = time.monotonic()
        # Both at once: ten answers from b alone can also be a warming a's small share.
        eventually(
            lambda: state(etcd_server, "a") == "down" and gw.serves_only("b", 10),
            30,
            "a marked down and out of the upstream",
        )
        took = time.monotonic() - failed_at
        bound = FALL * HEALTH_INTERVAL + DEBOUNCE_MAX + SLACK
        assert took < bound, f"{took:.2f}s > {bound:.2f}s"
        assert "marking down" in agent_a.log()

        a.health_status = 200
        client_sees(client, "a", "b")
        assert state(etcd_server, "a") == "up"
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert {"a", "b"} <= set(client.results)
    # a's return starts its warm-up ramp: a step may be between install and confirm.
    eventually(lambda: gw.healthz()[0] == 200, 20, "healthz 200", detail=lambda: str(gw.healthz()))
    assert gw.stop_watch() == 0


def test_sigterm_drains_the_unit_while_its_slow_request_completes(
    etcd_gateway, etcd_server, agents, backends
):
    a, b = backends("a"), backends("b")
    gw = etcd_gateway()
    agent_a = start_agent(agents, gw, a)
    start_agent(agents, gw, b)
    both_serving(gw)

    # One slow request in flight on a (requests to b come back at once).
    a.delay = 6.0
    slow: dict[str, Any] = {}

    def until_a() -> None:
        with requests.Session() as s:
            for _ in range(50):
                r = s.get(gw.url, timeout=30)
                if r.headers.get("X-Backend") == "a":
                    slow["status"] = r.status_code
                    return

    started = a.count
    caller = threading.Thread(target=until_a, daemon=True)
    caller.start()
    eventually(lambda: a.count > started, 20, "a slow request reaching a")

    t0 = time.monotonic()
    agent_a.signal(signal.SIGTERM)
    eventually(lambda: state(etcd_server, "a") == "draining", 10, "a draining")
    # The gateway stops sending a new requests while the slow one is still running.
    # (Wait on the watcher, not on requests: a request to a would take 6s.)
    eventually(lambda: f"servers removed: app {a.address}" in gw.logs(), 20, "a out")
    in_flight = a.count
    assert gw.serves_only("b", 20)
    assert a.count == in_flight, "a draining unit got a new request"
    assert caller.is_alive(), f"slow request ended early: {slow}, {time.monotonic() - t0:.1f}s"

    caller.join(30)
    assert slow.get("status") == 200, slow
    # The drain ends, the key goes, the agent exits 0; traffic stays on b.
    eventually(lambda: state(etcd_server, "a") is None, 20, "a deregistered")
    assert agent_a.wait(20) == 0
    assert "deregistered from etcd" in agent_a.log()
    eventually(lambda: gw.metric("nginxgen_service_instances") == 1, 20, "a gone")
    assert gw.serves_only("b", 10)
    assert gw.healthz()[0] == 200


def test_sigkilled_agent_leaves_with_its_lease(etcd_gateway, etcd_server, agents, backends):
    a, b = backends("a"), backends("b")
    gw = etcd_gateway()
    agent_a = start_agent(agents, gw, a)
    start_agent(agents, gw, b)
    both_serving(gw)

    agent_a.signal(signal.SIGKILL)
    agent_a.wait()
    killed = time.monotonic()
    # Nobody deregisters a: etcd drops its key when the lease runs out, and the gateway
    # follows. (a's process still answers, so only the upstream can tell it is gone.)
    eventually(lambda: gw.serves_only("b", 10), 30, "a gone after its TTL")
    took = time.monotonic() - killed
    bound = TTL + DEBOUNCE_MAX + SLACK
    assert took < bound, f"{took:.2f}s > {bound:.2f}s"
    assert state(etcd_server, "a") is None
    assert gw.metric("nginxgen_service_instances") == 1


@pytest.mark.parametrize("wipe", [False, True], ids=["data-kept", "data-wiped"])
def test_etcd_outage_under_agents_and_watch(etcd_gateway, etcd_server, agents, backends, wipe):
    a, b = backends("a"), backends("b")
    gw = etcd_gateway()
    agent_a, agent_b = start_agent(agents, gw, a), start_agent(agents, gw, b)
    both_serving(gw)
    assert gw.proc is not None

    client = Client(gw.url)
    client.start()
    try:
        etcd_server.stop()
        # The gateway says its data is stale, keeps serving the last good config, and
        # stays up; so do the agents (longer than the TTL).
        eventually(lambda: gw.healthz()[0] == 503, 20, "stale health")
        assert "stale" in gw.healthz()[1]
        agent_a.wait_log("registry unreachable")
        # a turns unhealthy while nobody can write it down.
        a.health_status = 500
        time.sleep(TTL + 1)
        assert gw.proc.poll() is None and agent_a.alive() and agent_b.alive()
        assert gw.metric("nginxgen_registry_stale") == 1
        client_sees(client, "a", "b", timeout=10)  # the last good config

        etcd_server.restart(wipe=wipe)
        # Back: the agents write again (re-registering when the lease is gone) and the
        # gateway catches up with what changed meanwhile.
        eventually(lambda: state(etcd_server, "b") == "up", 30, "b registered")
        eventually(lambda: state(etcd_server, "a") == "down", 30, "a down in etcd")
        eventually(lambda: gw.serves_only("b", 10), 30, f"a out; {gw.logs()[-1500:]}")
        eventually(lambda: gw.healthz()[0] == 200, 20, "fresh health")
        assert gw.metric("nginxgen_registry_stale") == 0

        # Quiet registry, quiet watcher: it waits on the stream, it does not spin on reads.
        reads = gw.metric("nginxgen_registry_reads_total")
        time.sleep(2)
        assert gw.metric("nginxgen_registry_reads_total") - reads <= 3

        # And the watch stream follows new changes again.
        a.health_status = 200
        client_sees(client, "a", "b")
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert gw.stop_watch() == 0


def test_watch_and_agent_stop_promptly_while_etcd_is_down(
    etcd_gateway, etcd_server, agents, backends
):
    a = backends("a")
    gw = etcd_gateway()
    agent_a = start_agent(agents, gw, a, "--drain", "1s")
    eventually(lambda: gw.serves_only("a", 4), 40, "traffic on a")
    etcd_server.stop()
    eventually(lambda: gw.healthz()[0] == 503, 20, "stale health")
    agent_a.wait_log("registry unreachable")
    asked = time.monotonic()
    agent_a.signal(signal.SIGTERM)
    assert gw.stop_watch() == 0
    assert time.monotonic() - asked < SLACK
    # The agent drains for 1s, tries to deregister for max(TTL, 5s), leaves it to the TTL.
    assert agent_a.wait(30) == 0
    assert "when its TTL runs out" in agent_a.log()
    assert gw.serves_only("a", 4)  # nginx itself keeps serving the last good config
