"""Findings in the formats people and CI systems read: text, JSON, SARIF, GitHub, JUnit."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from .. import __version__
from .engine import Outcome
from .findings import Finding, Rule
from .rules import RULES

FORMATS = ("text", "json", "sarif", "github", "junit")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
HELP_URI = "https://github.com/nginxgen/nginxgen/blob/main/README.md#nginxgen-lint-the-ci-gate-for-nginx-configs"


def all_findings(outcome: Outcome) -> Iterator[Finding]:
    for result in outcome.results:
        yield from result.findings


def rule_table(outcome: Outcome) -> dict[str, Rule]:
    return {**RULES, **{r.id: r for r in outcome.extra_rules}}


def counts(outcome: Outcome) -> dict[str, int]:
    out = {"error": 0, "warning": 0, "note": 0}
    for f in all_findings(outcome):
        out[f.severity] += 1
    return out


def write(fmt: str, outcome: Outcome, out: TextIO, *, strict: bool, color: bool) -> None:
    if fmt == "text":
        text(outcome, out, color=color)
    elif fmt == "json":
        out.write(to_json(outcome, strict=strict) + "\n")
    elif fmt == "sarif":
        out.write(to_sarif(outcome) + "\n")
    elif fmt == "github":
        out.write(to_github(outcome))
    elif fmt == "junit":
        out.write(to_junit(outcome, strict=strict) + "\n")
    else:  # the CLI validates the name first
        raise ValueError(f"unknown format {fmt!r}")


# --- text -----------------------------------------------------------------------------

_STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}


def text(outcome: Outcome, out: TextIO, *, color: bool) -> None:
    """`file:line: severity RULE message`, then the offending line, as compilers print."""
    console = Console(
        file=out,
        force_terminal=color,
        no_color=not color,
        highlight=False,
        soft_wrap=True,
        width=200 if not color else None,
    )
    for f in all_findings(outcome):
        where = f"{f.file}:{f.line}" if f.line else f.file
        console.print(
            f"[bold]{escape(where)}[/]: [{_STYLE[f.severity]}]{f.severity}[/] "
            f"[dim]{f.rule}[/] {escape(f.message)}"
        )
        if f.source:
            console.print(f"  [dim]{f.line:>5} |[/] {escape(f.source.strip())}")


# --- JSON -----------------------------------------------------------------------------


def to_json(outcome: Outcome, *, strict: bool) -> str:
    c = counts(outcome)
    table = rule_table(outcome)
    findings = list(all_findings(outcome))
    ok = not any(f.fails(strict) for f in findings) and not any(r.io_error for r in outcome.results)
    return json.dumps(
        {
            "version": 1,
            "tool": {"name": "nginxgen", "version": __version__},
            "ok": ok,
            "summary": {"files": len(outcome.results), **{f"{k}s": v for k, v in c.items()}},
            "files": [
                {"path": r.path, "files": list(r.files), "io_error": r.io_error}
                for r in outcome.results
            ],
            "findings": [
                {
                    "rule": f.rule,
                    "name": table[f.rule].name if f.rule in table else f.rule,
                    "severity": f.severity,
                    "message": f.message,
                    "file": f.file,
                    "line": f.line,
                    "source": f.source,
                }
                for f in findings
            ],
        },
        indent=2,
    )


# --- SARIF 2.1.0 (GitHub code scanning) -----------------------------------------------

_SARIF_LEVEL = {"error": "error", "warning": "warning", "note": "note"}


def artifact_uri(file: str, base: str | None = None) -> str:
    """Repo-relative URI (forward slashes) when under `base`, else an absolute file: URI.

    `base` defaults to $GITHUB_WORKSPACE in Actions, else the working directory, which is
    the checkout root when the workflow runs lint from there.
    """
    base = os.path.realpath(base or os.environ.get("GITHUB_WORKSPACE") or os.getcwd())
    full = os.path.realpath(file)
    rel = os.path.relpath(full, base)
    if rel.startswith(".."):
        return "file://" + full.replace(os.sep, "/")
    return rel.replace(os.sep, "/")


def to_sarif(outcome: Outcome, base: str | None = None) -> str:
    table = rule_table(outcome)
    used = {f.rule for f in all_findings(outcome)}
    # Every nginxgen rule, so code scanning can show help for any of them; gixy's as met.
    ids = [r for r in RULES] + sorted(r for r in used if r not in RULES)
    index = {rid: i for i, rid in enumerate(ids)}
    rules = [_sarif_rule(table[rid]) if rid in table else _unknown_rule(rid) for rid in ids]
    results = []
    for f in all_findings(outcome):
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": index[f.rule],
                "level": _SARIF_LEVEL[f.severity],
                "message": {"text": f.message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": artifact_uri(f.file, base)},
                            "region": {"startLine": f.line or 1},
                        }
                    }
                ],
            }
        )
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "nginxgen",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": HELP_URI,
                        "rules": rules,
                    }
                },
                "results": results,
                "columnKind": "utf16CodeUnits",
            }
        ],
    }
    return json.dumps(log, indent=2)


def _sarif_rule(rule: Rule) -> dict[str, object]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.message},
        "fullDescription": {"text": rule.explanation},
        "help": {"text": rule.explanation, "markdown": rule.explanation},
        "helpUri": f"{HELP_URI}#{rule.id.lower().replace('/', '')}",
        "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
        "properties": {"tags": ["nginx"]},
    }


def _unknown_rule(rid: str) -> dict[str, object]:
    return {"id": rid, "shortDescription": {"text": rid}, "help": {"text": rid}}


# --- GitHub workflow commands ---------------------------------------------------------

_GITHUB_COMMAND = {"error": "error", "warning": "warning", "note": "notice"}


def github_data(value: str) -> str:
    """Escape a workflow command's message (what follows `::`)."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def github_property(value: str) -> str:
    """Escape a workflow command property value (file=, title=): also ':' and ','."""
    return github_data(value).replace(":", "%3A").replace(",", "%2C")


def to_github(outcome: Outcome) -> str:
    lines = []
    for f in all_findings(outcome):
        props = [f"file={github_property(f.file)}"]
        if f.line:
            props.append(f"line={f.line}")
        props.append(f"title={github_property(f'{f.rule} ' + _name(outcome, f.rule))}")
        lines.append(f"::{_GITHUB_COMMAND[f.severity]} {','.join(props)}::{github_data(f.message)}")
    return "".join(line + "\n" for line in lines)


def _name(outcome: Outcome, rid: str) -> str:
    rule = rule_table(outcome).get(rid)
    return rule.name if rule else rid


# --- JUnit XML ------------------------------------------------------------------------


def to_junit(outcome: Outcome, *, strict: bool) -> str:
    """One testcase per finding (failing when it fails the gate), one passing per clean file."""
    suite = ET.Element("testsuite", name="nginxgen lint")
    tests = failures = errors = 0
    for result in outcome.results:
        cases: Iterable[Finding] = result.findings
        if result.io_error:
            case = ET.SubElement(suite, "testcase", classname=result.path, name="read")
            ET.SubElement(case, "error", message=result.io_error, type="io")
            tests, errors = tests + 1, errors + 1
            continue
        if not result.findings:
            ET.SubElement(suite, "testcase", classname=result.path, name="clean")
            tests += 1
            continue
        for f in cases:
            where = f"{f.file}:{f.line}" if f.line else f.file
            case = ET.SubElement(
                suite, "testcase", classname=result.path, name=f"{f.rule} {where}", file=f.file
            )
            if f.line:
                case.set("line", str(f.line))
            detail = f"{where}: {f.severity} {f.rule} {f.message}"
            if f.source:
                detail += f"\n  {f.line:>5} | {f.source.strip()}"
            if f.fails(strict):
                failure = ET.SubElement(case, "failure", message=f.message, type=f.rule)
                failure.text = detail
                failures += 1
            else:
                ET.SubElement(case, "system-out").text = detail
            tests += 1
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    root = ET.Element("testsuites", name="nginxgen lint")
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
