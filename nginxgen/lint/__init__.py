"""`nginxgen lint`: rules for nginx configs, generated or hand-written, and CI reporters."""

from __future__ import annotations

from .engine import Options, Outcome, lint_file, lint_paths
from .findings import FileResult, Finding, Rule
from .rules import RULES, canonical

__all__ = [
    "RULES",
    "FileResult",
    "Finding",
    "Options",
    "Outcome",
    "Rule",
    "canonical",
    "lint_file",
    "lint_paths",
]
