"""`nginxgen watch` following a Kubernetes API server, with real nginx and real backends.

The API server is tests/helpers/kubernetes.py (no real one can run here), over TLS with a
test CA and a bearer token from a file, as in a pod. Each backend is one pod; since all
listen on 127.0.0.1, each sits in its own EndpointSlice with its own port number (as the
controller does for pods whose named port resolves to different numbers).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers import Backend, Client, WatchedGateway, who_answers
from tests.helpers import poll_until as eventually
from tests.helpers.kubernetes import FakeKubeAPI, endpoint, endpoint_slice
from tests.helpers.tls import make_tls_files

OUTAGE = 30.0  # seconds the API server stays away


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[FakeKubeAPI]:
    fake = FakeKubeAPI(tls=make_tls_files(tmp_path / "pki"), token="sa-token").start()
    yield fake
    fake.stop()


@pytest.fixture
def kube_gateway(
    watched_gateway: Callable[..., WatchedGateway], workdir: Path, kube: FakeKubeAPI
) -> Callable[[], WatchedGateway]:
    """nginx on a config rendered from the cluster, kept in step by `nginxgen watch`."""

    def make() -> WatchedGateway:
        (workdir / "token").write_text("sa-token\n")
        assert kube.tls is not None
        registry = {
            "kind": "kubernetes",
            "api": kube.url,
            "namespace": "shop",
            "token_file": str(workdir / "token"),
            "ca_file": str(kube.tls.ca),
            "services": ["app"],
            "ports": {"app": "http"},
            "read_timeout": "2s",
        }
        return watched_gateway(
            registry=registry,
            # a pod that is ready takes its full share here
            extra={"defaults": {"warmup": "off"}},
        )

    return make


def pod(kube: FakeKubeAPI, backend: Backend, **conditions: Any) -> None:
    """Put the backend's pod in the cluster (or change its conditions)."""
    slice_ = endpoint_slice(
        "app", f"app-{backend.name}", [endpoint("127.0.0.1", backend.name, **conditions)],
        port=backend.port,
    )  # fmt: skip
    kube.apply(slice_)


def serves(gw: WatchedGateway, *names: str, n: int = 12) -> bool:
    return set(who_answers(gw.url, n)) == set(names)


def client_sees(client: Client, *names: str, timeout: float = 30) -> None:
    mark = len(client.results)
    eventually(lambda: set(names) <= set(client.results[mark:]), timeout, f"traffic on {names}")


def test_a_terminating_pod_is_drained_then_gone(kube_gateway, kube, backends):
    a, b = backends("a"), backends("b")
    pod(kube, a)
    pod(kube, b)
    gw = kube_gateway()
    eventually(lambda: serves(gw, "a", "b"), 30, f"traffic on a and b; {gw.logs()[-1500:]}")

    # One slow request in flight on a.
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

    # The pod is deleted: the kubelet marks its endpoint terminating, still serving while
    # its preStop hook and grace period run.
    t0 = time.monotonic()
    pod(kube, a, ready=False, serving=True, terminating=True)
    eventually(lambda: f"servers removed: app {a.address}" in gw.logs(), 20, "a out")
    # Until the old workers have closed their listeners (moments after the reload is
    # confirmed), one of them may still accept a connection: nginx's reload, not ours.
    eventually(lambda: gw.serves_only("b", 10), 20, "only b answering")
    in_flight = a.count
    assert gw.serves_only("b", 20)
    assert a.count == in_flight, "a draining pod got a new request"
    assert caller.is_alive(), f"slow request ended early: {slow}, {time.monotonic() - t0:.1f}s"
    caller.join(30)
    assert slow.get("status") == 200, slow

    # The pod is gone: its slice goes, and so does the instance.
    kube.delete(f"app-{a.name}")
    eventually(lambda: gw.metric("nginxgen_service_instances") == 1, 20, "a gone")
    assert gw.serves_only("b", 10)
    assert gw.healthz()[0] == 200
    assert gw.stop_watch() == 0


@pytest.mark.parametrize("expire_as", ["event", "http"])
def test_an_expired_watch_lists_again_without_dropping_a_serving_pod(
    kube_gateway, kube, backends, expire_as
):
    a, b, c = backends("a"), backends("b"), backends("c")
    pod(kube, a)
    pod(kube, b)
    gw = kube_gateway()
    eventually(lambda: serves(gw, "a", "b"), 30, "traffic on a and b")
    lists = len(kube.calls("list"))
    kube.expire_as = expire_as
    kube.list_delay = 1.0  # the list after the 410 takes a while; nothing may empty meanwhile
    client = Client(gw.url)
    client.start()
    try:
        client_sees(client, "a", "b")
        with kube.cond:  # c arrives while the watch's history is lost
            pod(kube, c)
            if expire_as == "event":
                kube.expire()
            else:
                kube.compact()
                kube.end_watches(bookmark=False)
        client_sees(client, "a", "b", "c")
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert len(kube.calls("list")) == lists + 1
    # Not even for a moment: no removal applied, and none held by the guard either.
    assert "servers removed" not in gw.logs() and "holding a sudden removal" not in gw.logs()
    assert "listing the EndpointSlices again" in gw.logs()
    assert gw.metric("nginxgen_service_instances") == 3
    assert gw.healthz()[0] == 200


def test_the_api_server_away_for_30s_loses_no_serving_pod(kube_gateway, kube, backends):
    a, b = backends("a"), backends("b")
    pod(kube, a)
    pod(kube, b)
    gw = kube_gateway()
    eventually(lambda: serves(gw, "a", "b"), 30, "traffic on a and b")
    assert gw.proc is not None
    client = Client(gw.url, limit=1_000_000)  # 20,000 run out before the outage ends
    client.start()
    try:
        kube.stop()
        gone = time.monotonic()
        eventually(lambda: gw.healthz()[0] == 503, 20, "stale health")
        assert "stale" in gw.healthz()[1]
        # Meanwhile b's pod starts terminating; nobody can tell the gateway yet.
        pod(kube, b, ready=False, serving=True, terminating=True)
        while time.monotonic() - gone < OUTAGE:
            assert gw.proc.poll() is None, gw.logs()[-2000:]
            assert gw.healthz()[0] == 503
            time.sleep(0.5)
        assert gw.metric("nginxgen_registry_stale") == 1
        client_sees(client, "a", "b", timeout=30)  # the last good config, whole
        assert "servers removed" not in gw.logs() and "holding" not in gw.logs()

        kube.start()
        # Back: the watch resumes from where it was and delivers what happened meanwhile.
        eventually(lambda: gw.healthz()[0] == 200, 30, f"fresh health; {gw.logs()[-1500:]}")
        eventually(lambda: f"servers removed: app {b.address}" in gw.logs(), 20, "b drained")
        assert gw.serves_only("a", 10)
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert gw.metric("nginxgen_registry_stale") == 0
    assert gw.stop_watch() == 0
