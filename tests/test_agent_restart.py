"""The first half of a restart (before the program is touched) on a clock the test drives,
against a registrar that fails on demand: every registry failure aborts, and the unit is
registered again as it was."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from nginxgen.agent.base import AgentConfig, ControlConfig, Record, RegistryDown
from nginxgen.agent.runner import UNLIST_TIMEOUT, UNLISTING, Agent, _Job
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
    control=ControlConfig("127.0.0.1", 9901, "token", "http://127.0.0.1:9901", grace=3.0),
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
