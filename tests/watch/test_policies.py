"""The watch loop drives the traffic policies: warm-up steps, probe verdicts, state file.

A fake registry and a fake probe checker; no nginx (installs, no reloads).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from nginxgen.spec import Spec
from nginxgen.watch.apply import Result
from nginxgen.watch.loop import Options, Watcher
from tests.helpers.clock import FakeClock
from tests.helpers.source import FakeSource

STEP = {"step_percent": 25, "period": "300ms"}
PROBE = {"path": "/healthz", "interval": "200ms", "fall": 2, "rise": 1}


def make_spec(tmp_path: Path, defaults: dict[str, Any]) -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": str(tmp_path / "unused.yaml")},
            "nginx": {
                "flavor": "nginx",
                "output": str(tmp_path / "nginx.conf"),
                "pid": str(tmp_path / "nginx.pid"),
                "status_listen": "off",
            },
            "watch": {"listen": "off"},
            "defaults": defaults,
            "routes": [{"path": "/", "service": "app"}],
        }
    )


@pytest.fixture
def watcher(tmp_path, monkeypatch):
    monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
    made: list[Watcher] = []

    def make(source: FakeSource, defaults: dict[str, Any], **options: Any) -> Watcher:
        w = Watcher(
            tmp_path / "nginxgen.yaml",
            make_spec(tmp_path, defaults),
            Options(**options),
            source=source,
            clock=source.clock,
        )
        made.append(w)
        return w

    yield make
    for w in made:
        w.applier.policies.close()


def weights(tmp_path: Path) -> dict[int, int]:
    text = (tmp_path / "nginx.conf").read_text()
    return {int(p): int(w) for p, w in re.findall(r"server 127\.0\.0\.1:(\d+) weight=(\d+)", text)}


def reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.fields["reason"] for r in caplog.records if "reason" in getattr(r, "fields", {})]


def test_warmup_steps_wake_the_loop_and_each_step_is_installed(watcher, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nginxgen")
    clock = FakeClock()
    source = FakeSource(9001, clock=clock)
    w = watcher(source, {"warmup": STEP})
    w.apply(w.read())  # no state file yet: 9001 predates nginxgen
    assert w.applier.next_change is None and weights(tmp_path) == {9001: 1}
    source.set(9001, 9002)
    w.apply(w.read())
    seen = [weights(tmp_path)]
    assert w.metrics.warming._value.get() == 1
    woke = []
    while w.applier.next_change is not None:
        started = clock.now
        assert w.wait_for_change(str(source.version)) == "warmup"
        woke.append(round(clock.now - started, 3))
        assert w.apply(w.read()).result is Result.APPLIED
        seen.append(weights(tmp_path))
    assert seen == [
        {9001: 4, 9002: 1},
        {9001: 4, 9002: 2},
        {9001: 4, 9002: 3},
        {9001: 1, 9002: 1},
    ]
    # Each step's own time (300 ms, plus the 10 ms margin once): not the 1s wait slice.
    assert woke == [0.31, 0.3, 0.3]
    assert w.metrics.warming._value.get() == 0
    assert reasons(caplog) == ["start", "registry", "warmup", "warmup", "warmup"]


def test_a_new_watcher_continues_the_ramp_from_the_state_file(watcher, tmp_path):
    source = FakeSource(9001)
    w = watcher(source, {"warmup": {"step_percent": 25, "period": "1h"}})
    w.apply(w.read())
    source.set(9001, 9002)
    w.apply(w.read())
    assert weights(tmp_path) == {9001: 4, 9002: 1}
    state = (tmp_path / "nginxgen-state.json").read_text()
    assert "app/i9002@127.0.0.1:9002" in state

    # A restart: a new process that has never seen 9002 reads when it was first seen.
    again = watcher(source, {"warmup": {"step_percent": 25, "period": "1h"}}, once=True)
    assert again.one_pass() == 0
    assert weights(tmp_path) == {9001: 4, 9002: 1}
    assert again.applier.next_change is not None
    assert again.applier.next_change == w.applier.next_change
    assert (tmp_path / "nginxgen-state.json").read_text() == state


def test_once_applies_the_ramp_as_it_stands(watcher, tmp_path):
    source = FakeSource(9001)
    assert watcher(source, {"warmup": STEP}, once=True).one_pass() == 0
    source.set(9001, 9002)
    assert watcher(source, {"warmup": STEP}, once=True).one_pass() == 0
    assert weights(tmp_path) == {9001: 4, 9002: 1}  # step 1 of 4, at once


def test_a_probe_verdict_wakes_the_loop_and_takes_the_instance_out(watcher, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nginxgen")
    clock = FakeClock()
    source = FakeSource(9001, 9002, clock=clock)
    w = watcher(source, {"warmup": "off", "probe": PROBE})
    prober = w.applier.policies.prober
    assert prober is not None
    sick: set[str] = set()
    prober.checker = lambda t: "HTTP 500 from /healthz" if t.address in sick else ""
    w.apply(w.read())
    assert weights(tmp_path) == {9001: 1, 9002: 1}

    sick.add("127.0.0.1:9002")
    started = clock.now
    flipped: list[float] = []

    def probe_twice_at_200ms(c: FakeClock) -> None:
        if not flipped and c.now - started >= 0.2:
            flipped.append(c.now)
            prober.probe_all()
            prober.probe_all()  # fall: 2

    clock.on_sleep = probe_twice_at_200ms
    assert w.wait_for_change(str(source.version)) == "probe"
    clock.on_sleep = None
    # Noticed when the registry wait it flipped in ends: half a probe interval, not 1 s.
    assert 0 <= clock.now - flipped[0] <= 0.1 + 1e-9
    w.apply(w.read())
    assert weights(tmp_path) == {9001: 1}
    assert w.metrics.pseudo_dead._value.get() == 1

    sick.clear()
    prober.probe_all()
    assert w.wait_for_change(str(source.version)) == "probe"
    w.apply(w.read())
    assert weights(tmp_path) == {9001: 1, 9002: 1}
    assert w.metrics.pseudo_dead._value.get() == 0
    assert reasons(caplog) == ["start", "probe", "probe"]


def test_sighup_keeps_the_probe_verdicts_unless_the_probe_settings_change(watcher, tmp_path):
    source = FakeSource(9001)
    w = watcher(source, {"probe": PROBE})
    first = w.applier.policies
    w.applier.adopt(make_spec(tmp_path, {"probe": PROBE, "warmup": "off"}), None)
    assert w.applier.policies is first
    w.applier.adopt(make_spec(tmp_path, {"probe": {**PROBE, "fall": 5}}), None)
    assert w.applier.policies is not first
    assert w.applier.policies.state is first.state  # same state file: the ramps go on
    assert first.prober is not None and first.prober._stop.is_set()


def test_probe_verdicts_apply_on_the_last_good_catalog_while_the_registry_is_down(
    watcher, tmp_path
):
    source = FakeSource(9001, 9002)
    w = watcher(source, {"warmup": "off", "probe": PROBE})
    prober = w.applier.policies.prober
    assert prober is not None
    sick: set[str] = set()
    prober.checker = lambda t: "no answer within 2s" if t.address in sick else ""
    loop = threading.Thread(target=w.loop, daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "nginx.conf").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert weights(tmp_path) == {9001: 1, 9002: 1}
        source.broken = True
        sick.add("127.0.0.1:9002")
        prober.probe_all()
        prober.probe_all()
        while weights(tmp_path) != {9001: 1} and time.monotonic() < deadline:
            time.sleep(0.02)
        assert weights(tmp_path) == {9001: 1}
        assert w.health.stale_since is not None  # and /healthz still says the data is stale
    finally:
        w.stopping = True
        loop.join(10)
    assert not loop.is_alive()
