"""deploy/workers.py: an nginx master's processes read from /proc, named so that a reused
pid is not taken for the process that had it, and an exited one counts as gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nginxgen.deploy.workers import alive, children
from tests.helpers import seconds_until as eventually


def test_children_are_named_by_pid_and_start_time_and_leave_when_they_exit() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = {w for w in children(os.getpid()) if w[0] == child.pid}
        assert len(mine) == 1
        assert alive(frozenset(mine)) == mine
        (pid, started) = next(iter(mine))
        assert alive(frozenset({(pid, started + 1)})) == frozenset()  # another process
        child.kill()
        # Exited but not reaped yet (a zombie): gone already, it sends nothing.
        eventually(lambda: alive(frozenset(mine)) == frozenset())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "Z"
    finally:
        child.kill()
        child.wait()
    assert alive(frozenset(mine)) == frozenset()
    assert all(w[0] != child.pid for w in children(os.getpid()))


def test_without_proc_nothing_is_known(tmp_path) -> None:
    assert children(os.getpid(), tmp_path / "no-proc") == frozenset()
    assert alive(frozenset({(os.getpid(), 1)}), tmp_path / "no-proc") == frozenset()
