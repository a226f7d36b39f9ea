"""Run independent CPU-bound parts of one pass on more cores, by fork.

A cold verify of 10,000 services is crossplane's pure-Python lexer over 17 MB of text:
one core at a time. Forked children share the parent's memory, so nothing is pickled
on the way in; each child runs one task and sends back its pickled result, while the
parent runs the first task itself. If a child fails in any way (an exception, a signal,
a short pipe), the parent runs that task itself: the result never depends on the fork.

Children leave with os._exit: no atexit handlers, no second flush of the parent's
buffers. Used only on Linux with more than one usable CPU, and only while the process
has a single thread: a fork copies locks that other threads may hold (logging, metrics),
and a child stuck on one would stall the pass until CHILD_TIMEOUT. So `render` forks;
`watch`, which runs its health server and probes in threads, verifies in turn.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

MAX_WORKERS = 4
# A child still running after this long is killed and its share done here; a share of
# a cold 10,000-service verify takes seconds.
CHILD_TIMEOUT = 300.0


def workers() -> int:
    """How many tasks to run at once: usable CPUs, capped; 1 where fork is not used."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return 1
    if threading.active_count() > 1:
        return 1
    return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))


def run_all(tasks: Sequence[Callable[[], T]]) -> list[T]:
    """Each task's result, in order; all but the first run in forked children."""
    if len(tasks) <= 1 or workers() <= 1:
        return [task() for task in tasks]
    pending: list[tuple[int, int, int]] = []  # (pid, read end, task index), not yet reaped
    try:
        for i in range(1, len(tasks)):
            read_end, write_end = os.pipe()
            with warnings.catch_warnings():  # 3.12+ warns about fork with threads
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                _child(tasks[i], read_end, write_end)  # never returns
            os.close(write_end)
            pending.append((pid, read_end, i))
        results: list[T | None] = [None] * len(tasks)
        results[0] = tasks[0]()
        while pending:
            pid, read_end, i = pending.pop(0)
            try:
                data = _read_all(read_end, time.monotonic() + CHILD_TIMEOUT)
                if data is None:  # hung: a lock another thread held at fork time?
                    os.kill(pid, signal.SIGKILL)
            finally:
                os.close(read_end)
                _, status = os.waitpid(pid, 0)
            if data and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                results[i] = pickle.loads(data)
            else:
                results[i] = tasks[i]()  # the child failed: do its share here
        return results  # type: ignore[return-value]
    finally:
        for pid, read_end, _ in pending:  # only after an exception in the parent
            os.close(read_end)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def _read_all(fd: int, deadline: float) -> bytes | None:
    """Everything the child writes until it exits; None if that takes past `deadline`."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _child(task: Callable[[], object], read_end: int, write_end: int) -> None:
    code = 1
    try:
        os.close(read_end)
        data = pickle.dumps(task(), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)
        code = 0
    finally:
        os._exit(code)
