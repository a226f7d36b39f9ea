"""Suppressions: each needs a reason and must name rules that exist.

Inline ones (`# nginxgen: disable=...`) are checked here once the walk has collected
them; the project file's ignores are checked where it is read (config.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..findings import Finding, rule
from ..tree import Suppression

SUPPRESSION_INVALID = rule(
    "NGX017",
    "suppression-invalid",
    "warning",
    "suppression without a reason, or naming an unknown rule",
    """Write `# nginxgen: disable=RULE[,RULE] why this is fine` on the directive's
    line, on the line above it, or first thing in a block; per-path ignores in
    .nginxgen-lint.yaml need a `reason:` too. The reason is what a reviewer reads a
    year later; a rule id that does not exist suppresses nothing.""",
)


def check_inline(
    suppressions: Iterable[Suppression], canonical: Callable[[str], str | None]
) -> list[Finding]:
    """A finding for each suppression that names an unknown rule or gives no reason."""
    findings = []
    for s in suppressions:
        unknown = [r for r in s.rules if canonical(r) is None]
        if unknown:
            message = f"suppression names unknown rule(s) {', '.join(unknown)}"
            findings.append(Finding(SUPPRESSION_INVALID.id, "warning", message, s.file, s.line))
        if not s.reason:
            message = f"suppression of {','.join(s.rules) or 'nothing'} without a reason"
            findings.append(Finding(SUPPRESSION_INVALID.id, "warning", message, s.file, s.line))
    return findings


RULES = (SUPPRESSION_INVALID,)
