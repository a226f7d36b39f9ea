"""nginxgen.util.backoff, and the two loops that use it: `watch` and the agent.

An outage can last days; each test runs 100,000 failures (at a 30 s cap, about 26 days) on an
injected rng and clock. `2**failures` used to overflow a float after 1,024 of them.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from nginxgen.agent.base import AgentConfig, Record, RegistryDown
from nginxgen.agent.runner import Agent
from nginxgen.model.catalog import Catalog
from nginxgen.sources import RegistryError
from nginxgen.util.backoff import Backoff
from nginxgen.watch.loop import Watcher
from tests.helpers.clock import FakeClock

FAILURES = 100_000


def test_delays_double_with_jitter_up_to_the_cap_and_reset():
    b = Backoff(1, 8, random.Random(1))
    delays = [b.next() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered, not in step
    b.reset()
    assert b.failures == 0 and b.next() <= 1


def test_a_hundred_thousand_failures_stay_between_half_the_cap_and_the_cap():
    b = Backoff(0.5, 30, random.Random(7))
    delays = [b.next() for _ in range(FAILURES)]
    assert b.failures == FAILURES
    assert all(15 <= d <= 30 for d in delays[6:])  # 0.5 * 2**6 = 32: at the cap from here
    assert min(delays[6:]) < 16 and max(delays[6:]) > 29  # the jitter spans the range


def test_the_rng_decides_the_jitter():
    lowest, highest = random.Random(), random.Random()
    lowest.random = lambda: 0.0  # type: ignore[method-assign]
    highest.random = lambda: 0.999999  # type: ignore[method-assign]
    assert Backoff(2, 2, lowest).next() == 1.0
    assert Backoff(2, 2, highest).next() == pytest.approx(2.0, abs=1e-5)


def test_an_initial_delay_of_zero_still_grows_to_the_cap():
    b = Backoff(0, 4, random.Random(3))
    delays = [b.next() for _ in range(40)]
    assert delays[0] == 0 and 2 <= delays[-1] <= 4


class _Down:
    """A source whose registry never answers."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> Catalog:
        self.reads += 1
        raise RegistryError("fake registry: connection refused")

    def wait(self, version: str, timeout: float) -> bool:
        raise AssertionError("the loop must not wait on a registry it never read")

    def close(self) -> None:
        pass


def test_watch_survives_a_hundred_thousand_failed_reads(tmp_path: Path, monkeypatch):
    from tests.watch.test_loop import make_spec

    monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
    monkeypatch.setattr("nginxgen.watch.loop.event", lambda *args, **kwargs: None)  # 100k lines
    source = _Down()
    clock = FakeClock()  # time passes, nobody waits
    w = Watcher(
        tmp_path / "nginxgen.yaml",
        make_spec(tmp_path, backoff={"initial": "500ms", "max": "30s"}),
        source=source,  # type: ignore[arg-type]
        clock=clock,
    )
    delays: list[float] = []
    backoff_next = w.backoff.next

    def next_delay() -> float:
        delays.append(backoff_next())
        if len(delays) == FAILURES:
            w.stopping = True
        return delays[-1]

    w.backoff.next = next_delay  # type: ignore[method-assign]
    w.loop()
    assert source.reads == FAILURES
    assert all(15 <= d <= 30 for d in delays[6:])
    # Every delay was slept in full on the watcher's clock (in naps of at most 0.5 s).
    assert clock.elapsed == pytest.approx(sum(delays[:-1]))
    assert clock.elapsed > 20 * 86400  # weeks of outage, and the loop is still there
    assert w.metrics.read_errors._value.get() == FAILURES


class _Unreachable:
    """A registrar whose registry never answers."""

    name = "fake registry"

    def __init__(self) -> None:
        self.calls = 0

    def register(self, record: Record) -> None:
        self.calls += 1
        raise RegistryDown("fake registry: connection refused")

    update = heartbeat = register

    def deregister(self) -> None:
        raise RegistryDown("fake registry: connection refused")

    def close(self) -> None:
        pass


def test_the_agent_survives_a_hundred_thousand_failed_registrations():
    clock = {"now": 0.0}
    config = AgentConfig("app", "app-1", "127.0.0.1:8080", ttl=3.0)
    registrar = _Unreachable()
    lines: list[str] = []
    agent = Agent(config, registrar, lines.append, clock=lambda: clock["now"])  # type: ignore[arg-type]
    agent.record = Record.first(config, "up", agent.now())
    waits = []
    for _ in range(FAILURES):
        agent._sync()
        waits.append(agent.next_retry - clock["now"])
        clock["now"] = agent.next_retry
    assert registrar.calls == FAILURES
    cap = agent.backoff.cap
    assert all(cap / 2 <= w <= cap for w in waits[10:])
    assert len(lines) == 1 and "never giving up" in lines[0]  # said once, not 100,000 times
