"""forked.run_all: results in order from child processes; a failing child is redone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nginxgen.util import forked


@pytest.fixture
def two_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork even on a one-CPU machine, or with a thread an earlier test left running:
    the forking is what these tests check."""
    monkeypatch.setattr(forked, "workers", lambda: 2)


@pytest.mark.usefixtures("two_workers")
def test_tasks_run_in_children_and_results_come_back_in_order() -> None:
    parent = os.getpid()
    results = forked.run_all([lambda i=i: (i, os.getpid() != parent) for i in range(3)])
    assert [i for i, _ in results] == [0, 1, 2]
    assert [in_child for _, in_child in results] == [False, True, True]


@pytest.mark.usefixtures("two_workers")
def test_a_child_that_fails_has_its_task_redone_by_the_parent() -> None:
    parent = os.getpid()

    def flaky() -> str:
        if os.getpid() != parent:
            raise RuntimeError("child trouble")
        return "done here"

    def dies() -> str:
        if os.getpid() != parent:
            os._exit(3)
        return "also here"

    assert forked.run_all([lambda: "first", flaky, dies]) == ["first", "done here", "also here"]


@pytest.mark.usefixtures("two_workers")
def test_an_exception_in_the_parent_reaps_the_children() -> None:
    def boom() -> int:
        raise ValueError("parent share failed")

    before = children()
    with pytest.raises(ValueError):
        forked.run_all([boom, lambda: 1])
    assert children() == before  # killed and reaped: no child, not even a zombie


def children() -> set[str]:
    tasks = Path(f"/proc/{os.getpid()}/task")  # Linux, where nginxgen forks at all
    return {pid for t in tasks.iterdir() for pid in (t / "children").read_text().split()}


@pytest.mark.usefixtures("two_workers")
def test_a_hung_child_is_killed_and_its_task_redone(monkeypatch) -> None:
    monkeypatch.setattr(forked, "CHILD_TIMEOUT", 0.5)
    parent = os.getpid()

    def hangs() -> str:
        if os.getpid() != parent:
            time.sleep(60)
        return "done here"

    before = children()
    started = time.monotonic()
    assert forked.run_all([lambda: "first", hangs]) == ["first", "done here"]
    assert time.monotonic() - started < 30
    assert children() == before


def test_a_process_with_threads_does_not_fork() -> None:
    """A fork would copy locks other threads hold (watch runs a health server thread)."""
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert forked.workers() == 1
        assert forked.run_all([lambda: os.getpid(), lambda: os.getpid()]) == [os.getpid()] * 2
    finally:
        stop.set()
        t.join()
