"""Lint files: parse (includes followed), walk once with the rules, apply suppressions.

Includes: a relative `include` resolves against the directory of the file being linted,
which is what nginx does with the file given to `-c` (its conf prefix), and not against
the directory of the file that holds the `include`. Lint the top-level nginx.conf and
every included file is checked in the context nginx reads it in. An include lint will not
read (a device, a FIFO, a huge file; see parse.py) or that loops back is an NGX000 error,
and then neither nginx -t nor gixy runs on that file.

A file with no `http`, `events` or `stream` block that fails context checks is a snippet
(conf.d/*.conf linted on its own): it is parsed again as if it sat inside `http {}`.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..deploy.nginx_bin import Binary
from . import external
from .config import ProjectConfig
from .external import NGINX_TEST
from .findings import FileResult, Finding, Rule
from .parse import SYNTAX, parse_config
from .rules import CHECKS, RULES, canonical
from .rules.suppressions import check_inline
from .tree import Scope, Walk

_WHERE = re.compile(r"\s+in\s+\S+:\d+$")
_TOP_LEVEL = {"http", "events", "stream", "mail"}
_NOT_RUN = "nginx -t not run: it would hang, crash or read without end on these includes (NGX000)"
# Parallel only pays when parsing outweighs starting worker processes (~0.1s each).
PARALLEL_MIN_BYTES = 256 * 1024


@dataclass(frozen=True)
class Options:
    disabled: frozenset[str] = frozenset()
    nginx: Binary | None = None  # run `nginx -t` with this binary
    security: bool = False  # run gixy-next
    project: ProjectConfig | None = None


@dataclass(frozen=True)
class Outcome:
    results: tuple[FileResult, ...]
    extra_rules: tuple[Rule, ...] = field(default=())  # rules met at run time (gixy)


def lint_file(path: str, options: Options) -> tuple[FileResult, list[Rule]]:
    """Lint one top-level file and everything it includes."""
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        what = "no such file" if not os.path.exists(path) else "not a readable file"
        return FileResult(path, (), (path,), io_error=f"{path}: {what}"), []
    with _gc_paused():
        payload = parse_config(path, comments=True)
        scope = None
        if _is_snippet(payload):
            payload = parse_config(path, comments=True, check_ctx=False)
            scope = Scope(in_http=True)
        walk = Walk(payload, checks=CHECKS, top_scope=scope)
        walk.run()

    findings = [_syntax(e, path) for e in payload["errors"]]
    for hit in walk.hits:
        if hit.suppressed and _suppressed(hit.rule, hit.suppressed):
            continue
        rule = RULES[hit.rule]
        findings.append(
            Finding(hit.rule, rule.severity, hit.message or rule.message, hit.file, hit.line)
        )
    findings += check_inline(walk.suppressions, canonical)

    files = tuple(c["file"] for c in payload["config"])
    known = {os.path.realpath(f): f for f in files}
    rules: list[Rule] = []
    # nginx and gixy read includes themselves: a FIFO blocks them, a device or huge file
    # eats memory, and nginx recurses through an include loop until it crashes.
    unsafe = bool(payload["refused"] or walk.loops)
    if options.nginx is not None and unsafe:
        findings.append(Finding(NGINX_TEST.id, "note", _NOT_RUN, path, None))
    elif options.nginx is not None:
        findings += external.nginx_test(options.nginx, path, known)
    if options.security and not unsafe:
        found, rules = external.gixy_findings(path, known)
        findings += found
    findings = [f for f in findings if _reported(f, options)]
    findings.sort(key=lambda f: (f.file != path, f.file, f.line or 0, f.rule))
    return FileResult(path, tuple(_with_source(findings)), files), rules


def lint_paths(
    paths: Iterable[str],
    options: Options,
    *,
    jobs: int | None = None,
    on_done: Callable[[FileResult], None] | None = None,
) -> Outcome:
    """Lint every path (directories: their *.conf files), in parallel when it pays."""
    files = expand(paths)
    workers = jobs if jobs is not None else _workers(files)
    results: dict[str, FileResult] = {}
    rules: dict[str, Rule] = {}

    def collect(result: FileResult, found: list[Rule]) -> None:
        results[result.path] = result
        rules.update((r.id, r) for r in found)
        if on_done is not None:
            on_done(result)

    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result, found in pool.map(lint_file, files, [options] * len(files)):
                collect(result, found)
    else:
        for f in files:
            collect(*lint_file(f, options))

    # A file another linted file includes was checked there, in the right context.
    included = {os.path.realpath(f) for r in results.values() for f in r.files if f != r.path}
    ordered = [results[f] for f in files if os.path.realpath(f) not in included]
    if options.project is not None and options.project.problems:
        ordered.append(
            FileResult(
                options.project.path, tuple(options.project.problems), (options.project.path,)
            )
        )
    return Outcome(tuple(ordered), tuple(rules.values()))


def expand(paths: Iterable[str]) -> list[str]:
    """Paths as given; a directory stands for the *.conf files below it (sorted)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(str(f) for f in Path(p).rglob("*.conf") if f.is_file())
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def _workers(files: list[str]) -> int:
    cpus = os.cpu_count() or 1
    if cpus < 2 or len(files) < 2:
        return 1
    size = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
    return min(cpus, len(files)) if size >= PARALLEL_MIN_BYTES else 1


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while crossplane builds the tree.

    The payload is millions of small acyclic dicts and lists; the collector rescans them
    again and again while they are created (about a fifth of a large parse's time) and
    can free none of them. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _is_snippet(payload: dict[str, Any]) -> bool:
    if not any("not allowed here" in e["error"] for e in payload["errors"]):
        return False
    top = payload["config"][0]["parsed"] if payload["config"] else []
    return not any(d["directive"] in _TOP_LEVEL for d in top)


def _syntax(error: dict[str, Any], path: str) -> Finding:
    message = _WHERE.sub("", error["error"])
    return Finding(SYNTAX.id, "error", message, error.get("file") or path, error.get("line"))


def _suppressed(rule: str, tokens: frozenset[str]) -> bool:
    return rule in tokens or RULES[rule].name in tokens or rule.lower() in tokens


def _reported(f: Finding, options: Options) -> bool:
    if f.rule in options.disabled:
        return False
    project = options.project
    return project is None or (
        f.rule not in project.disable and not project.ignored(f.file, f.rule)
    )


def _with_source(findings: list[Finding]) -> Iterable[Finding]:
    lines: dict[str, list[str]] = {}
    for f in findings:
        if f.line is None:
            yield f
            continue
        if f.file not in lines:
            try:
                text = Path(f.file).read_text(encoding="utf-8", errors="replace")
                lines[f.file] = text.splitlines()
            except OSError:
                lines[f.file] = []
        src = lines[f.file]
        yield replace(f, source=src[f.line - 1].rstrip() if 0 < f.line <= len(src) else "")
