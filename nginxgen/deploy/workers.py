"""nginx's worker processes as /proc shows them: who was there before a reload, who is left.

After a reload the master starts new workers, waits about 100 ms, and only then tells the
old ones to stop accepting; an old worker then finishes what it holds, retries
(`proxy_next_upstream`) included, on the old config. So "a worker answers the new
generation" does not mean "no worker sends requests by the old config": only the old
workers' exit does. A worker is named by (pid, start time in clock ticks since boot), so
a reused pid is never taken for the process that had it.
"""

from __future__ import annotations

from pathlib import Path

Worker = tuple[int, int]  # (pid, start time in clock ticks since boot)

PROC = Path("/proc")


def _stat(pid: str, proc: Path) -> tuple[int, int] | None:
    """(parent pid, start time) of `pid`, or None when it is gone, exited (a zombie
    not reaped yet) or unreadable."""
    try:
        text = (proc / pid / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after it.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        if fields[0] in ("Z", "X"):
            return None
        return int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def children(master: int, proc: Path = PROC) -> frozenset[Worker]:
    """The master's child processes now (workers, cache manager); empty without /proc."""
    out: set[Worker] = set()
    try:
        entries = [p.name for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return frozenset()
    for pid in entries:
        stat = _stat(pid, proc)
        if stat is not None and stat[0] == master:
            out.add((int(pid), stat[1]))
    return frozenset(out)


def alive(workers: frozenset[Worker], proc: Path = PROC) -> frozenset[Worker]:
    """Those of `workers` that still run (same pid and the same start time)."""
    out = set()
    for pid, started in workers:
        stat = _stat(str(pid), proc)
        if stat is not None and stat[1] == started:
            out.add((pid, started))
    return frozenset(out)
