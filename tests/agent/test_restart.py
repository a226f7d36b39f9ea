"""A restart on a clock the test drives, against a registrar that fails on demand. Before
the program is touched, every registry failure aborts and the unit is registered again as
it was; after it is started again, a program that never passes its check fails the
restart at --start-timeout and is registered only once it passes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from nginxgen.agent.base import AgentConfig, ControlConfig, HealthCheck, Record, RegistryDown
from nginxgen.agent.runner import UNLIST_TIMEOUT, UNLISTING, WAITING_HEALTHY, Agent, _Job
from nginxgen.util.checks import CheckResult
from tests.helpers import ManualClock


class Registrar:
    name = "fake registry"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.listing: str | None = None

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if what in self.fail:
            raise RegistryDown(f"{what}: connection refused")

    def register(self, record: Record) -> None:
        self._call("register")

    def update(self, record: Record) -> None:
        self._call("update")

    def heartbeat(self, record: Record) -> None:
        self._call("heartbeat")

    def deregister(self) -> None:
        self._call("deregister")

    def listed(self) -> str | None:
        self._call("listed")
        return self.listing

    def close(self) -> None:
        pass


CONFIG = AgentConfig(
    "app",
    "app-1",
    "127.0.0.1:8080",
    command=("true",),
    control=ControlConfig(
        "127.0.0.1", 9901, "token", "http://127.0.0.1:9901", grace=3.0, start_timeout=60.0
    ),
)
BORN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def serving_agent() -> tuple[Agent, Registrar, ManualClock, list[str]]:
    """An agent whose unit is registered `up`, with a restart accepted and taken."""
    clock, registrar, lines = ManualClock(100.0), Registrar(), []
    agent = Agent(CONFIG, registrar, lines.append, clock=clock, now=lambda: BORN)
    agent.record = Record.first(CONFIG, "up", BORN)
    agent.written, agent.ever_registered = "up", True
    assert agent.desk.request("gateway").status == 202
    job = agent.desk.take()
    assert job is not None
    agent.job = _Job(job.id, agent.record)
    return agent, registrar, clock, lines


def aborted(agent: Agent, lines: list[str]) -> str:
    assert agent.job is None
    last = agent.desk.status()["last_restart"]
    assert last["result"] == "aborted"
    # Registered again as before: the same record, written afresh.
    assert agent.record == Record.first(CONFIG, "up", BORN)
    assert agent.written is None and agent.next_retry == 0.0
    assert "it keeps running and is registered again as before" in lines[-1]
    return last["reason"]


def test_a_failed_deregistration_aborts():
    agent, registrar, clock, lines = serving_agent()
    registrar.fail.add("deregister")
    agent._restart_turn()
    assert aborted(agent, lines) == (
        "could not deregister from fake registry (deregister: connection refused)"
    )
    assert registrar.calls == ["deregister"]
    agent._sync()
    assert registrar.calls[-1] == "register" and agent.written == "up"


def test_a_registry_that_cannot_be_read_after_deregistration_aborts():
    agent, registrar, clock, lines = serving_agent()
    registrar.fail.add("listed")
    agent._restart_turn()
    assert aborted(agent, lines).startswith("cannot read fake registry to see that it no longer")
    assert registrar.calls == ["deregister", "listed"]


def test_a_registry_that_keeps_listing_the_unit_aborts_at_the_deadline():
    agent, registrar, clock, lines = serving_agent()
    registrar.listing = "up"
    due = agent._restart_turn()
    assert agent.job is not None and agent.job.phase == UNLISTING and due == clock.now + 0.1
    clock.now += UNLIST_TIMEOUT - 0.01
    agent._restart_turn()
    assert agent.job is not None  # still waiting
    clock.now += 0.1  # the first read at or after the deadline
    agent._restart_turn()
    assert aborted(agent, lines) == (
        "fake registry still lists the unit as up 30s after it was deregistered"
    )


@pytest.mark.parametrize("listing", [None, "down", "draining"])
def test_the_grace_runs_from_when_the_registry_stopped_listing_the_unit(listing):
    agent, registrar, clock, lines = serving_agent()
    registrar.listing = "up"
    agent._restart_turn()
    clock.now += 2.0
    registrar.listing = listing  # now the gateway no longer sends it anything
    assert agent._restart_turn() == clock.now + 3.0
    clock.now += 2.9
    assert agent._restart_turn() == clock.now + 0.1
    assert agent.job is not None and agent.job.phase == UNLISTING
    assert registrar.calls.count("listed") == 2  # read until unlisted, then only the grace
    assert agent.record is None  # no heartbeat, no re-registration meanwhile
    steps = [s["step"] for s in agent.desk.status()["restart"]["steps"]]
    assert steps == ["deregistered", "unlisted"]
    assert agent.job.unlisted_at == 102.0  # the next turn stops the program


class Check:
    """Stands in for the agent's Checker: answers what the test says."""

    def __init__(self) -> None:
        self.ok = False
        self.check = HealthCheck("http", url="http://127.0.0.1:8080/healthz")

    def __call__(self, timeout: float) -> CheckResult:
        return CheckResult(self.ok, "HTTP 200" if self.ok else "HTTP 503", 0.0)


def test_a_program_that_never_passes_fails_the_restart_at_the_start_timeout():
    agent, registrar, clock, lines = serving_agent()
    check = Check()
    agent.checker = check  # type: ignore[assignment]
    assert agent.job is not None
    agent.record, agent.written = None, None  # deregistered, the program started again
    agent.job.phase, agent.job.next_check = WAITING_HEALTHY, clock.now
    agent.job.deadline = clock.now + 60.0
    for _ in range(240):  # every 0.25 s for a minute: still waiting, nothing registered
        due = agent._restart_turn()
        assert agent.job is not None and due <= agent.job.deadline
        clock.now = due
        if clock.now >= agent.job.deadline - 0.01:
            break
    assert agent.job is not None and agent.record is None
    agent._restart_turn()  # at the deadline
    assert agent.job is None
    last = agent.desk.status()["last_restart"]
    assert last["result"] == "failed"
    assert last["reason"].startswith(
        "http://127.0.0.1:8080/healthz did not pass within 1m of the start (HTTP 503)"
    )
    assert "registered once it passes" in lines[-1]
    # The desk is free: another restart can be asked for (the limit permitting).
    assert agent.desk.request("gateway").status == 202
    agent.desk.finish("cancelled")
    # Not registered until it passes; then registered with a new start time.
    agent._sync()
    assert "register" not in registrar.calls and agent.waiting
    agent.now = lambda: datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)
    check.ok = True
    agent._health_turn(check)  # type: ignore[arg-type]
    agent._sync()
    assert registrar.calls[-1] == "register" and agent.written == "up"
    assert agent.record is not None and agent.record.registered_at.minute == 5
