"""The prober against real backends: a 500 on the health path, one that hangs, recovery."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nginxgen.model.validate import CatalogBuilder
from nginxgen.spec import parse_spec
from nginxgen.watch.probe import Prober
from tests.helpers import seconds_until as eventually


@pytest.fixture
def hung() -> Iterator[str]:
    """An address that accepts TCP connections and never answers (a hung application)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


def make(tmp: Path, probe: str, *addresses: str):
    spec = parse_spec(
        "registry: {kind: file, path: s.yaml}\n"
        f"defaults: {{probe: {probe}}}\n"
        "routes: [{path: /, service: app}]\n",
        tmp / "nginxgen.yaml",
    )
    b = CatalogBuilder("t")
    for i, address in enumerate(addresses):
        b.add("app", id=f"i{i}", address=address)
    return spec, b.build()


FAST = "{path: /healthz, interval: 0.2s, timeout: 0.3s, fall: 2, rise: 2}"


def test_failing_and_hung_instances_go_dead_within_fall_intervals_and_come_back(
    tmp_path, backends, hung
) -> None:
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    spec, cat = make(tmp_path, FAST, ok.address, sick.address, hung)
    prober = Prober(spec)
    prober.update(cat)
    prober.start()
    try:
        took = eventually(lambda: len(prober.dead()) == 2)
        assert prober.dead() == {f"app/i1@{sick.address}", f"app/i2@{hung}"}
        # fall x interval = 0.4s (+ the hung probe's 0.3s timeout); generous for a busy box
        assert took < 2.0, took
        assert prober.changed.is_set()
        errors = {s.key: s.last_error for s in prober.status()}
        assert errors[f"app/i1@{sick.address}"] == "HTTP 500 from /healthz"
        assert errors[f"app/i2@{hung}"] == "no answer within 0.3s"

        prober.changed.clear()
        sick.health_status = 200
        eventually(lambda: prober.dead() == {f"app/i2@{hung}"})
        assert prober.changed.is_set()
        assert ok.count == 0  # probes do not count as traffic (health path)
    finally:
        prober.stop()


def test_probe_all_counts_rise_and_fall_exactly(tmp_path, backends) -> None:
    b = backends("b")
    spec, cat = make(tmp_path, "{fall: 3, rise: 2, expect_status: [204]}", b.address)
    prober = Prober(spec)
    prober.update(cat)
    for _ in range(2):
        prober.probe_all()
    assert prober.dead() == frozenset()  # 200 is not 204, but only 2 failures so far
    prober.probe_all()
    assert prober.dead() == {f"app/i0@{b.address}"}
    b.health_status = 204
    prober.probe_all()
    assert prober.dead()  # one success is not `rise`
    prober.probe_all()
    assert prober.dead() == frozenset()
    prober.stop()


def test_instances_leaving_the_registry_leave_the_dead_set(tmp_path, backends) -> None:
    b = backends("b")
    b.health_status = 503
    spec, cat = make(tmp_path, "{fall: 1}", b.address)
    prober = Prober(spec)
    prober.update(cat)
    prober.probe_all()
    assert prober.dead()
    prober.changed.clear()
    prober.update(make(tmp_path, "{fall: 1}")[1])
    assert prober.dead() == frozenset()
    assert prober.changed.is_set()
    prober.stop()


def test_whole_service_failing_is_warned_about(tmp_path, backends, caplog) -> None:
    a, b = backends("a"), backends("b")
    a.health_status = b.health_status = 500
    spec, cat = make(tmp_path, "{fall: 1}", a.address, b.address)
    prober = Prober(spec)
    prober.update(cat)
    with caplog.at_level(logging.WARNING, logger="nginxgen.probe"):
        prober.probe_all()
    assert "every instance fails its health probe; keeping them all in" in caplog.text
    prober.stop()


def test_recovery_command_runs_once_per_cooldown_with_the_instance_as_json(
    tmp_path, backends
) -> None:
    b = backends("b")
    b.health_status = 500
    out = tmp_path / "hook.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    argv = json.dumps([sys.executable, "-c", script])
    spec, cat = make(
        tmp_path, f"{{fall: 1, recovery: {{after: 3, command: {argv}, cooldown: 1h}}}}", b.address
    )
    prober = Prober(spec)
    prober.update(cat)
    for _ in range(8):
        prober.probe_all()
    eventually(lambda: len(prober.hook_runs) == 1)
    time.sleep(0.3)  # a second run would have had time to show up
    assert len(prober.hook_runs) == 1 and prober.hook_runs[0].ok, prober.hook_runs
    (line,) = out.read_text().splitlines()
    event = json.loads(line)
    assert event["service"] == "app" and event["instance"] == "i0"
    assert event["address"] == b.address and event["failures"] == 3
    assert event["last_error"] == "HTTP 500 from /healthz"
    prober.stop()


def test_recovery_url_gets_a_json_post_and_cooldown_allows_another(tmp_path, backends) -> None:
    sick, control = backends("sick"), backends("control")
    sick.health_status = 500
    clock = [0.0]
    spec, cat = make(
        tmp_path,
        f"{{fall: 2, recovery: {{after: 2, url: 'http://{control.address}/heal', cooldown: 60s}}}}",
        sick.address,
    )
    prober = Prober(spec, clock=lambda: clock[0])
    prober.update(cat)
    for _ in range(5):
        prober.probe_all()
        clock[0] += 5
    eventually(lambda: control.count == 1)
    clock[0] += 60
    prober.probe_all()
    eventually(lambda: control.count == 2)
    posted = control.requests[0]
    assert posted["method"] == "POST" and posted["path"] == "/heal"
    assert json.loads(posted["body"])["instance"] == "i0"
    prober.stop()
