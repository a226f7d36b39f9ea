"""deploy/feed.py: the token file, the generation counter, a push's outcomes."""

from __future__ import annotations

import os
from typing import Any

import pytest

from nginxgen.deploy.feed import (
    CONFIRM_POLL,
    LOCKED_DIGEST,
    Generations,
    push_endpoints,
    snapshot_generation,
    token_digest,
    write_snapshot,
)
from nginxgen.util.token_file import TokenFileError
from tests.helpers.clock import FakeClock


def test_the_token_file_is_created_0600_once_and_refused_when_others_can_read(tmp_path) -> None:
    path = tmp_path / "feed.token"
    digest, note = token_digest(str(path))
    assert note is None and path.stat().st_mode & 0o777 == 0o600
    assert token_digest(str(path)) == (digest, None), "kept, not made again"
    os.chmod(path, 0o640)
    with pytest.raises(TokenFileError, match="group or others"):
        token_digest(str(path))
    locked, note = token_digest(str(tmp_path / "missing-dir" / "feed.token"))
    assert locked == LOCKED_DIGEST and note and "refuses every push" in note


def test_generations_increase_strictly_and_continue_above_what_nginx_holds() -> None:
    clock = FakeClock()
    gens = Generations(clock)
    first = gens.next()
    assert gens.next() == first + 1  # the clock did not move: still newer
    gens.observe(first + 1000)
    assert gens.next() == first + 1001
    clock.advance(3600)
    assert gens.next() >= first + 3_600_000


class FakeFeed:
    def __init__(self, push: tuple[int, Any], statuses: list[dict[str, Any] | None]) -> None:
        self.pushed: list[dict[str, Any]] = []
        self._push, self._statuses = push, statuses

    def push(self, document: dict[str, Any]) -> tuple[int, Any]:
        self.pushed.append(document)
        return self._push

    def status(self) -> dict[str, Any] | None:
        return self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]


DELTA = {"app": {"peers": [{"host": "10.0.0.1", "port": 80, "weight": 1}]}}


def test_a_push_is_confirmed_when_every_worker_serves_it() -> None:
    workers = [{"pid": 7, "generation": 5}, {"pid": 8, "generation": 5}]
    feed = FakeFeed(
        (200, {"generation": 5}),
        [
            {"generation": 5, "converged": False},
            {"generation": 5, "converged": True, "workers": workers},
        ],
    )
    got = push_endpoints(feed, 5, DELTA, confirm_timeout=1, clock=FakeClock())  # type: ignore[arg-type]
    assert got.ok and got.result == "confirmed" and got.workers == (7, 8)
    assert feed.pushed == [{"generation": 5, "services": DELTA}]


def test_the_push_request_and_the_confirmation_are_timed_apart() -> None:
    clock = FakeClock()
    converged = {"generation": 5, "converged": True, "workers": [{"pid": 7}]}
    feed = FakeFeed((200, {"generation": 5}), [{"generation": 4}, converged])
    answer = feed.push

    def slow_push(document: dict[str, Any]) -> tuple[int, Any]:
        clock.advance(0.003)  # nginx took 3 ms to commit it
        return answer(document)

    feed.push = slow_push  # type: ignore[method-assign]
    got = push_endpoints(feed, 5, DELTA, confirm_timeout=1, clock=clock)  # type: ignore[arg-type]
    assert got.ok
    assert got.posted == pytest.approx(0.003)
    assert got.waited == pytest.approx(0.003 + CONFIRM_POLL)  # one status read too early


def test_refused_unconfirmed_and_unreachable_pushes_say_why() -> None:
    stale = FakeFeed((409, {"error": "generation 5 is not newer than 9", "current": 9}), [None])
    got = push_endpoints(stale, 5, DELTA, confirm_timeout=1, clock=FakeClock())  # type: ignore[arg-type]
    assert not got.ok and got.result == "refused" and got.current == 9
    assert got.error == "nginx refused the push (409): generation 5 is not newer than 9"
    slow = FakeFeed((200, {}), [{"generation": 4, "converged": True}])
    got = push_endpoints(slow, 5, DELTA, confirm_timeout=2, clock=FakeClock())  # type: ignore[arg-type]
    assert got.result == "unconfirmed" and "within 2s" in got.error and got.waited >= 2
    gone = FakeFeed((0, "ConnectionRefusedError: [Errno 111]"), [None])
    got = push_endpoints(gone, 5, DELTA, confirm_timeout=1, clock=FakeClock())  # type: ignore[arg-type]
    assert got.result == "unreachable" and "does not answer" in got.error


def test_the_snapshot_is_written_whole_and_read_back(tmp_path) -> None:
    path = str(tmp_path / "endpoints.json")
    assert snapshot_generation(path) is None
    write_snapshot(path, 42, DELTA)
    assert snapshot_generation(path) == 42
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def _dynamic_plan(tmp_path: Any, memo: Any, weights: dict[str, int]) -> Any:
    from nginxgen.model.catalog import Catalog, Instance
    from nginxgen.plan import make_plan
    from nginxgen.spec import Spec

    spec = Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {"output": str(tmp_path / "nginx.conf")},
            "routes": [{"path": f"/{n}/", "service": n} for n in ("a", "b", "c")],
        }
    )
    services = {n: (Instance(f"{n}1", n, "10.0.0.1", 80, w),) for n, w in weights.items()}
    return make_plan(spec, Catalog(services), memo=memo)


def test_the_snapshot_text_reuses_unchanged_services_and_redoes_changed_ones(tmp_path) -> None:
    import json

    from nginxgen.deploy.feed import SnapshotTexts
    from nginxgen.plan import PlanMemo
    from nginxgen.plan.endpoints import endpoints

    memo, texts = PlanMemo(), SnapshotTexts()
    first = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})
    doc = texts.document(7, first)
    assert json.loads(doc) == {"generation": 7, "services": endpoints(first)}
    path = tmp_path / "snap.json"
    write_snapshot(str(path), 7, endpoints(first))
    assert doc == path.read_text(), "the same bytes as the uncached writer"
    pieces = dict(texts._pieces)

    second = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 5, "c": 1})
    doc = json.loads(texts.document(8, second))
    assert doc["services"]["b"]["peers"][0]["weight"] == 5, "no stale text after a change"
    assert texts._pieces["a"] is pieces["a"], "an unchanged service's text is reused"
    assert texts._pieces["b"] is not pieces["b"]
    assert doc == {"generation": 8, "services": endpoints(second)}

    # c leaves the registry: its upstream stays (nobody alive, Lua answers 503), emptied.
    third = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 5})
    doc = json.loads(texts.document(9, third))
    assert doc["services"]["c"] == {"peers": []}

    class Fewer:  # a plan whose upstreams no longer include b and c
        upstreams = tuple(u for u in third.upstreams if u.name == "a")

    assert json.loads(texts.document(10, Fewer()))["services"].keys() == {"a"}  # type: ignore[arg-type]
    assert texts._pieces.keys() == {"a"}, "a removed service is dropped"
