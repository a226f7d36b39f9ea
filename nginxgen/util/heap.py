"""Keep Python's cycle collector out of the big allocation bursts of one pass.

Planning, rendering and parsing 10,000 services allocate millions of small containers
that live until the pass ends. The collector triggers on allocation counts, so it runs
over and over during such a burst, each full run walking every object alive; measured on
a whole-file crossplane parse this doubled the time. The data built here holds no
reference cycles that need collecting mid-pass, so collection waits until the pass ends,
when the next allocations trigger it as usual (and `watch` settles after each apply).
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# The collector is one per process, so is the count of passes that paused it: the one
# piece of module state in nginxgen, and it mirrors the interpreter's own.
_lock = threading.Lock()
_depth = 0  # passes in progress (nested or in other threads)
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable automatic collection inside the block; restore it when the last block ends."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def without_collector(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of `collector_paused`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with collector_paused():
            return fn(*args, **kwargs)

    return wrapper


class Settler:
    """After each apply: collect, then move the survivors (plan, caches) out of the
    collector's sight with `gc.freeze`, so no later collection walks them again.

    With 10,000 services the render caches hold hundreds of thousands of objects, and a
    full collection walking them all would land in the middle of most applies; the
    watcher settles after the reload, off the change-to-served path.

    Frozen objects are still freed by reference counting; only garbage *cycles* through
    them wait. So the full collection (unfreeze everything, collect, freeze again) runs
    only once the frozen heap has grown by a quarter since the last one, CPython's own
    rule for full collections; in between, collecting the young generations is enough.
    At 10,000 services that is ~5 ms instead of ~120 ms per apply.
    """

    # Between two pushes, the young generations only: counting the frozen heap walks it
    # (~40 ms at 10,000 services), so a push checks for a full collection this seldom.
    FULL_CHECK_EVERY = 64

    def __init__(self) -> None:
        self.frozen_after_full = 0  # objects frozen right after the last full collection
        self._light = 0  # light settles since the last full check

    def settle_light(self) -> None:
        """After a push: collect the young generations and freeze the survivors; every
        FULL_CHECK_EVERY-th call settles in full (see `settle`)."""
        self._light += 1
        if self._light >= self.FULL_CHECK_EVERY or self.frozen_after_full == 0:
            self.settle()
            return
        gc.collect(1)
        gc.freeze()

    def settle(self) -> None:
        self._light = 0
        baseline = self.frozen_after_full
        if gc.get_freeze_count() > baseline * 1.25 or baseline == 0:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.frozen_after_full = gc.get_freeze_count()
        else:
            gc.collect(1)
            gc.freeze()
            # A heap that shrank (services removed) is the new baseline for "a quarter more".
            self.frozen_after_full = min(baseline, gc.get_freeze_count())
