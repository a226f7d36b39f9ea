"""Verdicts from outside the rule set, turned into findings: `nginx -t` and gixy-next."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..deploy.nginx_bin import Binary, test_config
from .findings import Finding, Rule, Severity, rule

NGINX_TEST = rule(
    "NGX019",
    "nginx-test",
    "error",
    "nginx -t rejects the config",
    """With --nginx-test, the nginx (or openresty) binary on PATH checks the file
    itself. Its [emerg] messages are errors and its [warn] messages warnings.""",
)

# "2026/11/29 21:31:26 [emerg] 97#97: message in /etc/nginx/x.conf:12" (or "nginx: [emerg] …")
_NGINX_LINE = re.compile(
    r"\[(emerg|alert|crit|error|warn|notice)\]\s+(?:\d+#\d+:\s+)?(.*?)(?:\s+in\s+(\S+):(\d+))?$"
)
_NGINX_SEVERITY: dict[str, Severity] = {
    "emerg": "error", "alert": "error", "crit": "error", "error": "error",
    "warn": "warning", "notice": "note",
}  # fmt: skip


def nginx_test(binary: Binary, path: str, known: Mapping[str, str]) -> list[Finding]:
    """Run `nginx -t` on the file in place (its includes resolve as in production).

    `known` maps real paths to the names the findings already use, so nginx's absolute
    paths come back as the user wrote them.
    """
    result = test_config(binary, Path(path).resolve())
    findings = []
    for raw in result.output.splitlines():
        m = _NGINX_LINE.search(raw.strip())
        if m is None:
            continue
        level, message, file, line = m.groups()
        shown = known.get(os.path.realpath(file), file) if file else path
        findings.append(
            Finding(
                NGINX_TEST.id,
                _NGINX_SEVERITY[level],
                f"{os.path.basename(binary.path)} -t: {message}",
                shown,
                int(line) if line else None,
            )
        )
    if not result.ok and not any(f.severity == "error" for f in findings):
        text = result.output.strip().splitlines()
        findings.append(
            Finding(NGINX_TEST.id, "error", text[-1] if text else "nginx -t failed", path, None)
        )
    return findings


# --- gixy-next ------------------------------------------------------------------------

_GIXY_SEVERITY: dict[str, Severity] = {
    "HIGH": "error",
    "MEDIUM": "warning",
    "LOW": "note",
    "INFORMATION": "note",
    "UNSPECIFIED": "note",
}


def gixy_available() -> bool:
    """gixy-next installed (and not gixy-ng, whose parser package replaces crossplane)."""
    return importlib.util.find_spec("gixy") is not None


def gixy_findings(path: str, known: Mapping[str, str]) -> tuple[list[Finding], list[Rule]]:
    """gixy-next's issues for `path` as findings with rule ids `gixy/<plugin>`."""
    from gixy.core.config import Config  # optional extra: imported only when asked for
    from gixy.core.manager import Manager

    # gixy logs parse trouble itself; our NGX000 already reports it with file and line.
    logging.getLogger("gixy").setLevel(logging.CRITICAL)
    findings: list[Finding] = []
    rules: dict[str, Rule] = {}
    with Manager(config=Config(allow_includes=True)) as manager, open(path, "rb") as fh:
        try:
            manager.audit(path, fh)
        except Exception as exc:
            if type(exc).__module__.startswith("gixy"):
                return [], []  # gixy's own parse error: crossplane has reported it (NGX000)
            raise
        for plugin in manager.results:
            rid = f"gixy/{plugin.name}"
            rules[rid] = Rule(
                rid,
                plugin.name,
                _GIXY_SEVERITY.get(str(plugin.severity), "warning"),
                _one_line(plugin.summary),
                _one_line(f"{plugin.description} {plugin.help_url}".strip()),
            )
            for issue in plugin.issues:
                severity = _GIXY_SEVERITY.get(str(issue.severity or plugin.severity), "warning")
                file, line = _where(issue.directives, path)
                text = _one_line(issue.summary or plugin.summary)
                if issue.reason:
                    text = f"{text.rstrip('.')}: {_one_line(issue.reason)}"
                findings.append(
                    Finding(rid, severity, text, known.get(os.path.realpath(file), file), line)
                )
    return findings, list(rules.values())


def _where(directives: list[Any], default: str) -> tuple[str, int | None]:
    for d in directives:
        line = getattr(d, "line", None)
        if line is not None:
            return getattr(d, "file", None) or default, int(line)
    return default, None


def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())
