"""The terminal side of the CLI: colour choice and a progress bar that only a wait earns.

Colour: `--color auto` colours a terminal unless NO_COLOR (https://no-color.org) is
set; `always` and `never` decide over both the terminal and the environment.
Progress: a transient bar on stderr, only when stderr is a terminal and only once the
work has taken longer than `delay` (a quick render prints nothing more than before).
"""

from __future__ import annotations

import os
import signal
import threading
from enum import Enum
from types import FrameType, TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ColorMode(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


def apply_color(mode: ColorMode, *consoles: Console) -> None:
    """Make `consoles` (made at import) follow `mode`; auto honours NO_COLOR fully (rich
    alone would still print bold)."""
    if mode is ColorMode.auto and not os.environ.get("NO_COLOR"):
        return
    always = mode is ColorMode.always
    for console in consoles:
        # A Console reads its colour settings in __init__ only: set them the same way.
        console.__init__(  # type: ignore[misc]
            stderr=console.stderr,
            highlight=False,
            force_terminal=True if always else None,
            color_system="standard" if always else None,
        )


class LateProgress:
    """`with LateProgress(console, total) as p: ... p.step("verifying")`: a bar with the
    current step's name, shown after `delay` seconds if the work is still going.

    Driven by SIGALRM in the main thread, not by rich's refresh thread: a second thread
    would stop `render` from verifying on several cores (util/forked.py forks only a
    single-threaded process), and stdout is left alone (rich would otherwise route the
    config printed on it through the live display)."""

    def __init__(self, console: Console, total: int, delay: float = 1.0, every: float = 0.2):
        self._progress = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task("starting", total=total)
        self._delay, self._every = delay, every
        self._shown = False
        self._active = (
            console.is_terminal
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        self._previous: Any = None

    def _tick(self, signum: int, frame: FrameType | None) -> None:
        if not self._shown:
            self._progress.start()
            self._shown = True
        self._progress.refresh()

    def step(self, description: str, advance: int = 1) -> None:
        """The step now running; `advance` counts the one before it as done."""
        self._progress.update(self._task, description=description, advance=advance)
        if self._shown:
            self._progress.refresh()

    def __enter__(self) -> LateProgress:
        if self._active:
            self._previous = signal.signal(signal.SIGALRM, self._tick)
            signal.setitimer(signal.ITIMER_REAL, self._delay, self._every)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        if self._shown:
            self._progress.stop()
