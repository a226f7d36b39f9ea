"""Shared test helpers: finding programs and modules, requiring them, polling with deadlines.

tests/conftest.py builds its fixtures on these; tests import them from here.
"""

from __future__ import annotations

from .clock import ManualClock
from .components import COMPONENTS, in_ci, require_component, require_nginx, skip_or_fail
from .poll import poll_until, seconds_until
from .tools import NginxInstall, find_nginx, find_tool, search_path

__all__ = [
    "COMPONENTS",
    "ManualClock",
    "NginxInstall",
    "find_nginx",
    "find_tool",
    "in_ci",
    "poll_until",
    "require_component",
    "require_nginx",
    "search_path",
    "seconds_until",
    "skip_or_fail",
]
