"""What verification finds, and its verdict on one config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    check: str  # "syntax", "round-trip", "nginx -t"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"[{self.check}] {where}{self.message}"


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...]
    nginx_tested: bool

    @property
    def ok(self) -> bool:
        return not self.findings
