"""`nginxgen status` against a real sidecar (`nginxgen watch`), real nginx and backends:
a warm-up ramp and a drain as the table and --json show them, and the requests of the
last minute counted from nginx's /metrics."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests

from tests.helpers import WatchedGateway, poll_until, run_cli
from tests.integration.test_gateway import metric
from tests.integration.test_watch import app, write_registry

PERIOD = 10.0  # a warm-up step: long enough to look at on a loaded machine
SENT = 20


def status(gw: WatchedGateway) -> dict[str, Any]:
    result = run_cli("status", "-c", str(gw.spec), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["services"]["app"]}


def table(gw: WatchedGateway) -> dict[str, str]:
    """`nginxgen status` as a person sees it: each instance's line of the table."""
    result = run_cli("status", "-c", str(gw.spec))  # COLUMNS=200: one line per row
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "app"
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    return {c[0]: " | ".join(c[1:]) for c in cells if c and c[0] != "instance"}


def test_status_shows_a_warm_up_ramp_then_a_drain(watched_gateway, backends, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    a, b = backends("a"), backends("b")
    warmup = {"step_percent": 25, "period": f"{PERIOD:g}s"}
    gw = watched_gateway(app(a), extra={"defaults": {"warmup": warmup}}, worker_processes=1)

    # Readiness must hold through the reloads that follow: between nginx loading a config
    # and the sidecar confirming it, nginx answers with a generation the sidecar has not
    # recorded yet, and that is a reload, not a fault.
    flaps: list[str] = []
    watching = threading.Event()

    def readiness() -> None:
        while not watching.is_set():
            code, text = gw.healthz()
            if code != 200 and "nginx serves generation" in text:
                flaps.append(text)
            time.sleep(0.01)

    watcher = threading.Thread(target=readiness, daemon=True)
    watcher.start()

    # b joins: it ramps 25, 50, 75 % of its weight, one step per PERIOD.
    write_registry(gw.dir, app(a, b))

    def warming() -> tuple[dict[str, Any], dict[str, str], str] | None:
        """The JSON, the table and the sidecar's gauges, all taken while b warms up (a
        ramp lasts 3 PERIODs: looking at all three in one go keeps them inside it)."""
        doc = status(gw)
        got = rows(doc)
        if "b" not in got or got["b"]["state"] != "warming":
            return None
        # In force: the reload for this step serves (planned = what nginx balances with).
        if (
            got["b"]["weight"] != got["b"]["planned_weight"]
            or doc["served_generation"] != doc["generation"]
        ):
            return None
        lines, gauges = table(gw), gw.metrics()
        labels = {"service": "app", "id": "b", "peer": b.address}
        if "warming" not in lines.get("b", ""):
            return None
        if metric(gauges, "nginxgen_instance_state", **labels, state="warming") != 1:
            return None
        return doc, lines, gauges

    doc, lines, gauges = poll_until(
        warming, 3 * PERIOD, "b warming up in `nginxgen status`", detail=gw.logs
    )
    got = rows(doc)
    assert got["b"]["percent"] in (25, 50, 75)
    assert got["b"]["reason"] == f"warm-up step {got['b']['percent'] // 25} of 4"
    # The upstream is scaled by 4 while b ramps: a 4, b 1..3.
    assert (got["a"]["state"], got["a"]["planned_weight"], got["a"]["weight"]) == ("serving", 4, 4)
    assert got["b"]["planned_weight"] == got["b"]["percent"] // 25
    assert got["a"]["address"] == a.address and got["b"]["address"] == b.address
    # As a person sees it: the table's lines.
    assert lines["b"].startswith(f"{b.address} | warming ") and " % | warm-up step " in lines["b"]
    assert lines["a"].startswith(f"{a.address} | serving |")
    # The sidecar's gauges (the dashboard's per-instance state panel).
    labels = {"service": "app", "id": "b", "peer": b.address}
    assert metric(gauges, "nginxgen_instance_warmup_percent", **labels) in (25, 50, 75)

    # Requests of the last minute, per instance, from nginx's /metrics.
    for _ in range(SENT):  # fresh connections: a reload may close an idle kept-alive one
        assert requests.get(gw.url, headers={"Connection": "close"}, timeout=10).ok

    def counted() -> dict[str, Any] | None:
        got = rows(status(gw))
        total = sum(r["requests"] or 0 for r in got.values())
        return got if total == SENT else None

    got = poll_until(counted, 30, f"{SENT} requests in `nginxgen status`", detail=gw.logs)
    assert got["a"]["requests"] > 0 and got["b"]["requests"] > 0  # b gets its ramp's share
    assert got["a"]["errors"] == got["b"]["errors"] == 0

    # a drains: out of nginx at the next reload; b takes everything.
    write_registry(gw.dir, {"app": [{**app(a)["app"][0], "state": "draining"}, app(b)["app"][0]]})

    def drained() -> dict[str, Any] | None:
        doc = status(gw)
        got = rows(doc)
        if got["a"]["state"] != "draining" or got["a"]["weight"] != 0:
            return None
        return doc if doc["served_generation"] == doc["generation"] else None

    doc = poll_until(drained, 30, "a draining in `nginxgen status --json`", detail=gw.logs)
    got = rows(doc)
    assert (got["a"]["planned_weight"], got["a"]["reason"]) == (0, "registry: draining")
    # b is alone now: nobody to ramp against, so it serves at its full weight.
    assert got["b"]["state"] in ("serving", "warming") and got["b"]["weight"] >= 1
    line = table(gw)["a"]
    assert line.startswith(f"{a.address} | draining | registry: draining | 0 | 0 |"), line
    assert gw.healthz()[0] == 200
    watching.set()
    watcher.join(10)
    assert flaps == [], flaps[:3]
    # b's arrival, a's drain (and steps): reloads, or pushes in dynamic mode (the default).
    assert gw.metric("nginxgen_reloads_total") + gw.metric("nginxgen_pushes_total") >= 2
