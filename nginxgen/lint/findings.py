"""Values that flow out of the linter: rules, findings, per-file results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "note"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")


@dataclass(frozen=True)
class Rule:
    id: str  # stable: NGX001..., or gixy/<plugin>; never renumbered
    name: str  # short kebab-case alias, accepted wherever an id is
    severity: Severity
    message: str  # one line: what is wrong
    explanation: str  # why it matters and what to do; shown by --explain and in SARIF help


def rule(id: str, name: str, severity: Severity, message: str, explanation: str) -> Rule:
    """A Rule, its explanation written as an indented paragraph and kept as one line."""
    return Rule(id, name, severity, message, " ".join(explanation.split()))


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    file: str  # as the user named it (or as the include resolved), not made absolute
    line: int | None = None
    source: str = ""  # the offending line's text, filled in by the engine

    def fails(self, strict: bool) -> bool:
        """Does this finding fail the gate? Errors always; warnings with --strict."""
        return self.severity == "error" or (strict and self.severity == "warning")


@dataclass(frozen=True)
class FileResult:
    """One linted PATH: its findings (includes' findings too) and the files it read."""

    path: str
    findings: tuple[Finding, ...]
    files: tuple[str, ...]  # the main file and every file it included
    io_error: str | None = None  # the path could not be read at all (exit 2)
