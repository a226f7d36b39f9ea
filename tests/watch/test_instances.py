"""The sidecar's view of each instance: the /status document (read back by status/view),
passive failures read from traffic samples, and the per-instance gauges."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from nginxgen.model.observed import Observed
from nginxgen.model.validate import CatalogBuilder
from nginxgen.plan import make_plan
from nginxgen.spec import parse_spec
from nginxgen.status.traffic import Counts, PeerTraffic
from nginxgen.status.view import parse
from nginxgen.watch.instances import MAX_GAUGED_INSTANCES, InstanceView, ReloadMode
from nginxgen.watch.telemetry import Health, Metrics, StatusServer
from tests.helpers import free_port

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
SPEC = parse_spec(
    """\
registry: {kind: file, path: s.yaml}
nginx: {flavor: nginx}
defaults: {warmup: {step_percent: 25, period: 10s}, health: {max_fails: 2, fail_timeout: 10s}}
routes: [{path: /, service: app}]
""",
    Path("/tmp/nginxgen.yaml"),
)


def catalog(**states: str):
    b = CatalogBuilder("t")
    b.add("app", id="old", address="10.0.0.1:80", registered_at=T0 - timedelta(days=1))
    b.add("app", id="new", address="10.0.0.2:80", registered_at=T0)
    b.add("app", id="bye", address="10.0.0.3:80", state=states.get("bye", "up"))
    return b.build()


def view(planned, applied, traffic, metrics=None, **kw) -> InstanceView:
    return InstanceView(
        lambda: SPEC,
        lambda: planned[0],
        ReloadMode(lambda: SPEC, lambda: applied[0], traffic),
        traffic=traffic,
        metrics=metrics,
        generation=lambda: "g2",
        served=lambda: "g1",
        **kw,
    )


def test_the_document_says_planned_and_in_force_and_traffic_per_instance() -> None:
    before = make_plan(SPEC, catalog(), T0 + timedelta(seconds=1))
    after = make_plan(SPEC, catalog(bye="draining"), T0 + timedelta(seconds=11))
    traffic = PeerTraffic()
    traffic.add(0.0, {})
    traffic.add(30.0, {("app", "10.0.0.1:80"): Counts(40, 1), ("app", "10.0.0.2:80"): Counts(5)})
    doc = view([after], [before], traffic).document()
    assert json.loads(json.dumps(doc)) == doc
    status = parse(doc)  # what `nginxgen status` reads
    assert (status.generation, status.served_generation, status.window_seconds) == ("g2", "g1", 30)
    rows = {r.id: r for r in status.services["app"]}
    old, new, bye = rows["old"], rows["new"], rows["bye"]
    assert (old.state, old.planned_weight, old.weight, old.requests, old.errors) == (
        "serving", 4, 4, 40, 1,
    )  # fmt: skip
    assert (new.state, new.percent, new.reason) == ("warming", 50, "warm-up step 2 of 4")
    assert (new.planned_weight, new.weight) == (2, 1)  # the reload for step 2 is not in yet
    assert (bye.state, bye.reason, bye.planned_weight, bye.weight) == (
        "draining", "registry: draining", 0, 4,
    )  # fmt: skip
    assert (bye.requests, bye.errors) == (0, 0)


def test_nothing_applied_yet_and_metrics_off_say_so_with_nulls() -> None:
    plan = make_plan(SPEC, catalog(), T0)
    doc = view([plan], [None], None).document()
    assert {r["weight"] for r in doc["services"]["app"]} == {None}
    assert {r["requests"] for r in doc["services"]["app"]} == {None}
    assert view([None], [None], None).document()["services"] == {}


def test_a_peer_whose_every_attempt_failed_is_passive_failed() -> None:
    plan = make_plan(SPEC, catalog(), T0 + timedelta(days=1))  # all warm
    traffic = PeerTraffic()
    traffic.add(0.0, {("app", "10.0.0.1:80"): Counts(10, 0), ("app", "10.0.0.2:80"): Counts(0)})
    traffic.add(5.0, {("app", "10.0.0.1:80"): Counts(13, 3), ("app", "10.0.0.2:80"): Counts(1, 1)})
    rows = {r["id"]: r for r in view([plan], [plan], traffic).document()["services"]["app"]}
    assert rows["old"]["state"] == "passive_failed"
    assert rows["old"]["reason"] == "nginx: 3 of 3 attempts failed in the last 5 s (max_fails 2)"
    assert rows["new"]["state"] == "serving"  # one failure is under max_fails
    # Once it answers again, or fail_timeout has passed with no attempt, it serves again.
    traffic.add(16.0, {("app", "10.0.0.1:80"): Counts(13, 3), ("app", "10.0.0.2:80"): Counts(1, 1)})
    rows = {r["id"]: r for r in view([plan], [plan], traffic).document()["services"]["app"]}
    assert rows["old"]["state"] == "serving"


def test_pseudo_dead_says_the_probe_error() -> None:
    dead = Observed(dead=frozenset({"app/bye@10.0.0.3:80"}))
    plan = make_plan(SPEC, catalog(), T0, dead)
    errors = {"app/bye@10.0.0.3:80": "HTTP 500 from /healthz"}
    doc = view([plan], [plan], PeerTraffic(), probe_errors=lambda: errors).document()
    (bye,) = [r for r in doc["services"]["app"] if r["id"] == "bye"]
    assert (bye["state"], bye["reason"]) == (
        "pseudo_dead", "fails its health probe: HTTP 500 from /healthz",
    )  # fmt: skip


def samples(metrics: Metrics) -> dict[tuple[str, ...], float]:
    text = metrics.exposition().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("nginxgen_instance_"):
                out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


def test_gauges_follow_state_and_weights_and_leave_with_their_instance() -> None:
    metrics = Metrics()
    planned = [make_plan(SPEC, catalog(), T0 + timedelta(seconds=1))]
    v = view(planned, planned, PeerTraffic(), metrics)
    v.refresh()
    got = samples(metrics)
    lab = (("id", "new"), ("peer", "10.0.0.2:80"), ("service", "app"))
    assert got[("nginxgen_instance_state", *sorted((*lab, ("state", "warming"))))] == 1
    assert got[("nginxgen_instance_warmup_percent", *lab)] == 25
    assert got[("nginxgen_instance_weight", *sorted((*lab, ("kind", "in_force"))))] == 1
    # bye drains: its state series changes, the warming one goes on climbing.
    planned[0] = make_plan(SPEC, catalog(bye="draining"), T0 + timedelta(seconds=11))
    v.refresh()
    got = samples(metrics)
    bye = (("id", "bye"), ("peer", "10.0.0.3:80"), ("service", "app"))
    assert got[("nginxgen_instance_state", *sorted((*bye, ("state", "draining"))))] == 1
    assert ("nginxgen_instance_state", *sorted((*bye, ("state", "serving")))) not in got
    assert got[("nginxgen_instance_warmup_percent", *bye)] == 0
    assert got[("nginxgen_instance_warmup_percent", *lab)] == 50
    # A service that leaves the plan takes its series along.
    planned[0] = make_plan(SPEC, CatalogBuilder("t").build(), T0)
    v.refresh()
    assert samples(metrics) == {}


def test_above_the_cap_the_gauges_say_nothing(monkeypatch) -> None:
    import nginxgen.watch.instances as instances

    metrics = Metrics()
    plan = [make_plan(SPEC, catalog(), T0)]
    v = view(plan, plan, PeerTraffic(), metrics)
    v.refresh()
    assert samples(metrics)
    monkeypatch.setattr(instances, "MAX_GAUGED_INSTANCES", 2)
    v.refresh()
    assert samples(metrics) == {}
    assert MAX_GAUGED_INSTANCES == 5_000
    text = metrics.exposition().decode()  # the families still say they exist
    assert "# TYPE nginxgen_instance_state gauge" in text


def test_status_server_answers_the_document_on_get_status() -> None:
    listen = f"127.0.0.1:{free_port()}"
    server = StatusServer(listen, Health(), Metrics()).start()
    try:
        assert requests.get(f"http://{listen}/status", timeout=5).status_code == 404
        server.document = lambda: {"services": {}, "generation": "g"}
        r = requests.get(f"http://{listen}/status", timeout=5)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        assert r.json() == {"services": {}, "generation": "g"}
    finally:
        server.stop()


def test_the_cap_is_checked_without_counting_every_instance() -> None:
    from nginxgen.watch.instances import _more_than

    def groups():  # type: ignore[no-untyped-def]
        yield ("a", "b")
        yield ("c",)
        raise AssertionError("counted past the cap")

    assert _more_than(groups(), 2)  # type: ignore[arg-type]
    assert not _more_than([("a", "b"), ("c",)], 3)  # type: ignore[list-item]
    assert _more_than([("a", "b"), ("c",)], 2)  # type: ignore[list-item]
