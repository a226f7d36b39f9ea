"""watch/policy_state.py: per-service reuse (one change among many services records one)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.watch.policy_state import PolicyState

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def services(n: int) -> dict[str, tuple[Instance, ...]]:
    return {f"s{i}": (Instance(f"s{i}-1", f"s{i}", "10.0.0.1", 8000 + i),) for i in range(n)}


def test_an_unchanged_service_is_reused_a_changed_one_recorded_a_removed_one_forgotten(
    tmp_path,
) -> None:
    state = PolicyState(tmp_path / "state.json")
    first = services(3)
    state.observe(Catalog(first), T0)  # fresh: all predate nginxgen
    kept = state._services["s0"]

    second = dict(first)
    second["s1"] = (*first["s1"], Instance("s1-2", "s1", "10.0.0.2", 9000))
    obs = state.observe(Catalog(second), T0 + timedelta(seconds=5))
    assert state._services["s0"] is kept, "the same tuple: not looked at again"
    assert obs.first_seen == {"s1/s1-2@10.0.0.2:9000": T0 + timedelta(seconds=5)}

    # The same catalog again: the very same read-only mapping (the plan memo skips it).
    again = state.observe(Catalog(second), T0 + timedelta(seconds=6))
    assert again.first_seen is obs.first_seen

    # s1's new instance leaves, and s2 with it: their entries are forgotten.
    third = {"s0": first["s0"], "s1": first["s1"]}
    obs = state.observe(Catalog(third), T0 + timedelta(seconds=7))
    assert dict(obs.first_seen) == {} and set(state._entries) == {
        "s0/s0-1@10.0.0.1:8000",
        "s1/s1-1@10.0.0.1:8001",
    }
    # ...and a return of s1-2 ramps afresh, from when it is seen again.
    back = state.observe(Catalog(second), T0 + timedelta(seconds=9))
    assert back.first_seen["s1/s1-2@10.0.0.2:9000"] == T0 + timedelta(seconds=9)


def test_a_pseudo_dead_verdict_redoes_only_its_service(tmp_path) -> None:
    state = PolicyState(tmp_path / "state.json")
    cat = Catalog(services(3))
    state.observe(cat, T0)
    kept = state._services["s0"]
    key = "s2/s2-1@10.0.0.1:8002"
    state.observe(cat, T0 + timedelta(seconds=1), dead={key})
    assert state._services["s0"] is kept
    assert state._entries[key]["serving"] is False
    obs = state.observe(cat, T0 + timedelta(seconds=2))  # healthy again: ramps from here
    assert obs.returned == {key: T0 + timedelta(seconds=2)}


def test_a_restart_reads_the_file_and_keeps_first_seen_times(tmp_path) -> None:
    path = tmp_path / "state.json"
    state = PolicyState(path)
    state.observe(Catalog(services(1)), T0)
    grown = services(1) | {"n": (Instance("n1", "n", "10.0.0.9", 80),)}
    state.observe(Catalog(grown), T0 + timedelta(seconds=3))
    state.save()
    restarted = PolicyState(path)
    obs = restarted.observe(Catalog(grown), T0 + timedelta(seconds=60))
    assert obs.first_seen == {"n/n1@10.0.0.9:80": T0 + timedelta(seconds=3)}
    path.unlink()
    restarted.save()
    assert not path.exists(), "what the file said, observed again: nothing to write"


def test_only_changed_and_pseudo_dead_services_are_looked_at(tmp_path, monkeypatch) -> None:
    state = PolicyState(tmp_path / "state.json")
    first = services(4)
    state.observe(Catalog(first), T0)
    looked: list[str] = []
    entries_of = PolicyState._entries_of

    def spy(self, instances, dead, last, now):  # type: ignore[no-untyped-def]
        looked.append(instances[0].service)
        return entries_of(self, instances, dead, last, now)

    monkeypatch.setattr(PolicyState, "_entries_of", spy)
    second = dict(first)
    second["s1"] = (Instance("s1-1", "s1", "10.0.0.1", 8001, weight=5),)
    state.observe(Catalog(second), T0, dead={"s3/s3-1@10.0.0.1:8003"})
    assert sorted(looked) == ["s1", "s3"]
    looked.clear()
    state.observe(Catalog(second), T0)  # s3 healthy again: looked at once more
    assert looked == ["s3"]
    looked.clear()
    state.observe(Catalog(second), T0)
    assert looked == []
