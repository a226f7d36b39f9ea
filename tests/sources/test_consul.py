"""Consul adapter against an in-process server that speaks Consul's health API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nginxgen.sources import RegistryError, open_source
from nginxgen.sources.consul import ConsulSource, Pace, reconcile
from nginxgen.spec import ConsulRegistry
from tests.helpers.fakes import FakeConsul, closed_port_url, consul_entry


@pytest.fixture
def consul() -> Iterator[FakeConsul]:
    server = FakeConsul().start()
    yield server
    server.stop()


def source(url: str, **kw: Any) -> ConsulSource:
    src = open_source(ConsulRegistry(kind="consul", url=url, **kw), ())
    assert isinstance(src, ConsulSource)
    return src


def states(catalog: Any, service: str) -> dict[str, str]:
    return {i.id: i.state for i in catalog.services[service]}


def test_states_come_from_checks_maintenance_drains_and_critical_wins(consul):
    consul.set(
        "web",
        [
            consul_entry("web", "web-1", "10.0.0.11", 8080, weights=(10, 1)),
            consul_entry("web", "web-2", "10.0.0.12", 8080, checks=("critical",)),
            consul_entry(
                "web", "web-3", "10.0.0.13", 8080, checks=("passing", "warning"), weights=(10, 2)
            ),
            consul_entry(
                "web",
                "web-4",
                "10.0.0.14",
                8080,
                node_checks=(("serfHealth", "passing"), ("_service_maintenance:web-4", "critical")),
            ),
            consul_entry(
                "web",
                "web-5",
                "10.0.0.15",
                8080,
                node="node-5",
                node_checks=(("_node_maintenance", "critical"),),
            ),
            consul_entry(
                "web", "web-6", "10.0.0.16", 8080, node_checks=(("serfHealth", "critical"),)
            ),
        ],
    )
    catalog = source(consul.url).read()
    assert states(catalog, "web") == {
        "web-1": "up",
        "web-2": "down",
        "web-3": "up",
        "web-4": "draining",
        "web-5": "draining",
        "web-6": "down",  # the node's serf check fails: everything on it is down
    }
    weights = {i.id: i.weight for i in catalog.services["web"]}
    assert weights["web-1"] == 10 and weights["web-3"] == 2  # Weights.Warning when warning
    # Nothing filtered server-side: the adapter judged the checks itself.
    assert all("passing" not in r.query for r in consul.log)


def test_warning_state_is_configurable(consul):
    consul.set("web", [consul_entry("web", "w", "10.0.0.1", 80, checks=("warning",))])
    assert states(source(consul.url, warning="draining").read(), "web") == {"w": "draining"}


def test_address_falls_back_to_node_and_meta_overrides(consul):
    consul.set(
        "api",
        [
            consul_entry(
                "api",
                "a1",
                "",
                9000,
                node_address="10.9.9.9",
                meta={"weight": "7", "registered_at": "2026-11-29T10:00:00Z"},
            ),
            consul_entry("api", "a2", "10.0.0.2", 9000, meta={"state": "draining"}),
            consul_entry(
                "api", "a3", "10.0.0.3", 9000, checks=("critical",), meta={"state": "up"}
            ),  # metadata cannot revive a failing instance
        ],
    )
    catalog = source(consul.url).read()
    by_id = {i.id: i for i in catalog.services["api"]}
    assert by_id["a1"].host == "10.9.9.9" and by_id["a1"].weight == 7
    assert by_id["a1"].registered_at is not None and by_id["a1"].registered_at.hour == 10
    assert by_id["a2"].state == "draining"
    assert by_id["a3"].state == "down"


def test_services_are_discovered_and_filtered_by_tag(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80, tags=("public",))])
    consul.set("db", [consul_entry("db", "d1", "10.0.0.2", 5432, tags=("private",))])
    assert set(source(consul.url).read().services) == {"web", "db"}
    assert set(source(consul.url, tag="public").read().services) == {"web"}
    assert set(source(consul.url, services=["db"]).read().services) == {"db"}


def test_token_datacenter_and_stale_are_sent_and_the_token_never_shown(consul, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "s3cr3t-token")
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    source(consul.url, datacenter="dc2", stale=True, services=["web"]).read()
    req = consul.log[-1]
    assert req.headers["X-Consul-Token"] == "s3cr3t-token"
    assert req.query["dc"] == "dc2" and "stale" in req.query
    consul.fail_with = 403
    with pytest.raises(RegistryError) as exc:
        source(consul.url, services=["web"]).read()
    assert "s3cr3t-token" not in str(exc.value)


def test_blocking_query_returns_on_change(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    src = source(consul.url, services=["web"])
    first = src.read()
    threading.Timer(
        0.3, lambda: consul.set("web", [consul_entry("web", "w2", "10.0.0.2", 80)])
    ).start()
    started = time.monotonic()
    assert src.wait(first.version, timeout=10) is True
    assert time.monotonic() - started < 5
    blocking = [r for r in consul.log if "index" in r.query]
    assert blocking and blocking[0].query["wait"].endswith("s")
    assert {i.id for i in src.read().services["web"]} == {"w2"}
    src.close()


def test_blocking_query_times_out_without_change(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    src = source(consul.url, services=["web"])
    version = src.read().version
    started = time.monotonic()
    assert src.wait(version, timeout=1.0) is False
    assert time.monotonic() - started >= 0.9
    src.close()


def test_pace_allows_a_burst_of_two_then_one_per_interval():
    pace = Pace(10.0)
    assert pace.delay("k") == 0 and pace.delay("k") == 0
    assert 9.0 < pace.delay("k") <= 10.0
    assert pace.delay("other") == 0


def test_index_reset_rules():
    assert reconcile(100, 120) == 120
    assert reconcile(100, 90) == 0  # went backwards: start over
    assert reconcile(100, 0) == 0
    assert reconcile(100, None) == 0  # missing or not a number


def test_index_going_backwards_is_a_change_and_queries_are_rate_limited(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    src = source(consul.url, services=["web"], min_interval=0.25)
    version = src.read().version
    consul.index_override = 3  # a restored snapshot: the index went backwards
    threading.Timer(0.2, lambda: consul.set("web", consul.services["web"])).start()
    assert src.wait(version, timeout=5) is True
    assert src.read().version == '{"web":3}'  # fresh read: block on the new index
    # Stuck at index 0, Consul answers every blocking query at once; we still pace them.
    consul.index_override = 0
    version = src.read().version
    n = len(consul.log)
    src.wait(version, timeout=1.0)
    queries = [r for r in consul.log[n:] if "index" in r.query]
    assert 2 <= len(queries) <= 7, f"{len(queries)} queries in 1s: not paced"
    assert all(r.query["index"] == "1" for r in queries)  # never block on index 0
    src.close()


# --- failures -------------------------------------------------------------------------


def test_registry_down_names_registry_and_url():
    url = closed_port_url()
    with pytest.raises(RegistryError) as exc:
        source(url, services=["web"]).read()
    assert str(exc.value).startswith(f"consul {url}/v1/health/service/web: connection refused")
    assert "\n" not in str(exc.value)


def test_timeout(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    consul.delay = 1.5
    with pytest.raises(RegistryError, match=r"no answer within 0.3s"):
        source(consul.url, services=["web"], read_timeout=0.3).read()


def test_http_500_fails_the_whole_read(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    consul.fail_with = 500
    with pytest.raises(RegistryError, match=r"HTTP 500"):
        source(consul.url).read()


def test_one_failing_service_fails_the_read(consul):
    """All-or-nothing: a half catalog is never presented as complete."""
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    consul.route("GET", "/v1/health/service/db", lambda req: (500, {}, b"boom"))
    consul.routes.insert(0, consul.routes.pop())
    with pytest.raises(RegistryError, match=r"/v1/health/service/db: HTTP 500"):
        source(consul.url, services=["web", "db"]).read()


def test_malformed_json(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    consul.garbage = True
    with pytest.raises(RegistryError, match=r"not valid JSON"):
        source(consul.url, services=["web"]).read()


def test_bad_instances_are_dropped_with_their_names(consul):
    bad_port = consul_entry("web", "web-bad-port", "10.0.0.9", 70000)
    injected = consul_entry("web", "web-evil", "10.0.0.1;}", 80)
    odd_check = consul_entry("web", "web-odd", "10.0.0.8", 80, checks=("sleepy",))
    consul.set(
        "web",
        [consul_entry("web", "web-1", "10.0.0.1", 80), bad_port, injected, odd_check, {"Node": {}}],
    )
    catalog = source(consul.url).read()
    assert [i.id for i in catalog.services["web"]] == ["web-1"]
    reasons = {d.instance: d.reason for d in catalog.dropped}
    assert "port out of range" in reasons["web-bad-port"]
    assert "not an IP address or DNS name" in reasons["web-evil"]
    assert "unknown status 'sleepy'" in reasons["web-odd"]
    assert "no Service object" in reasons["#4"]


def test_wait_raises_when_consul_goes_away(consul):
    consul.set("web", [consul_entry("web", "w1", "10.0.0.1", 80)])
    src = source(consul.url, services=["web"])
    version = src.read().version
    consul.stop()
    with pytest.raises(RegistryError, match=r"^consul .*/v1/health/service/web: "):
        src.wait(version, timeout=5)
    src.close()
