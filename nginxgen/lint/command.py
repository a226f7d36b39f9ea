"""`nginxgen lint PATH...`: the CI gate. Registered on the app in nginxgen/cli.py.

Exit codes: 0 clean (warnings allowed unless --strict); 1 a finding fails the gate;
2 usage or I/O error (unknown rule or format, unreadable path, missing nginx binary).
The report goes to stdout (or --output); the summary and progress go to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from ..console import LateProgress
from ..deploy.nginx_bin import find_binary
from ..spec import NginxSpec
from . import external
from .config import ConfigError, ProjectConfig, find_project_config, load_project_config
from .engine import Options, Outcome, expand, lint_paths
from .findings import FileResult
from .reporters import FORMATS, all_findings, counts, write
from .rules import RULES, canonical

err = Console(stderr=True, highlight=False)


def usage(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(2)


def lint(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="nginx config files, or directories (their *.conf files).", show_default=False
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"Report format: {', '.join(FORMATS)}.")
    ] = "text",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report here, not stdout.")
    ] = None,
    nginx_test: Annotated[
        bool, typer.Option("--nginx-test", help="Also run `nginx -t` (or openresty) on each file.")
    ] = False,
    nginx_binary: Annotated[
        str | None,
        typer.Option(
            "--nginx-binary", help="Binary for --nginx-test. Default: openresty, else nginx."
        ),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail the gate too.")] = False,
    disable: Annotated[
        str | None, typer.Option("--disable", help="Rules to skip: RULE,RULE (ids or names).")
    ] = None,
    explain: Annotated[
        str | None, typer.Option("--explain", help="Explain a rule and exit.", metavar="RULE")
    ] = None,
    security: Annotated[
        bool | None,
        typer.Option(
            "--security/--no-security",
            help="gixy-next checks. Default: when nginxgen[security] is installed.",
        ),
    ] = None,
    lint_config: Annotated[
        Path | None,
        typer.Option("--lint-config", help="Project config. Default: nearest .nginxgen-lint.yaml."),
    ] = None,
) -> None:
    """Lint nginx configs (generated or hand-written) for CI: rules, suppressions, formats."""
    if explain is not None:
        explain_rule(explain)
        return
    if fmt not in FORMATS:
        usage(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not paths:
        usage("give at least one config file or directory to lint")
    for empty in empty_directories(paths):
        # A gate that checks nothing must not pass: most likely the wrong directory.
        usage(f"no nginx config files in {empty} (looked for *.conf below it)")
    disabled = set()
    for token in (disable or "").split(","):
        if token.strip():
            rid = canonical(token.strip())
            if rid is None:
                usage(f"--disable: no rule {token.strip()!r} (see `nginxgen lint --explain ID`)")
            disabled.add(rid)
    binary = None
    if nginx_test:
        binary = find_binary(NginxSpec(binary=nginx_binary))
        if binary is None:
            wanted = nginx_binary or "openresty or nginx binary"
            usage(f"--nginx-test: no {wanted} found on PATH")
    if security and not external.gixy_available():
        usage("--security: gixy-next is not installed (pip install 'nginxgen[security]')")
    options = Options(
        disabled=frozenset(disabled),
        nginx=binary,
        security=external.gixy_available() if security is None else security,
        project=project_config(lint_config),
    )
    outcome = run(paths, options)

    stream = sys.stdout
    if output is not None:
        try:
            stream = open(output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            usage(f"--output {output}: cannot write: {exc.strerror}")
    try:
        write(fmt, outcome, stream, strict=strict, color=stream.isatty())
    finally:
        if stream is not sys.stdout:
            stream.close()
    raise typer.Exit(summarize(outcome, strict))


def empty_directories(paths: list[Path]) -> list[Path]:
    """The directories given that hold no *.conf file to lint."""
    return [p for p in paths if p.is_dir() and not expand([str(p)])]


def run(paths: list[Path], options: Options) -> Outcome:
    names = [str(p) for p in paths]
    total = len(expand(names))
    if not err.is_terminal or total < 2:
        return lint_paths(names, options)
    # Shown only when the lint takes over a second (console.py).
    with LateProgress(err, total=total) as progress:
        progress.step("linting", advance=0)

        def done(_: FileResult) -> None:
            progress.step("linting")

        return lint_paths(names, options, on_done=done)


def project_config(path: Path | None) -> ProjectConfig | None:
    found = path if path is not None else find_project_config(Path.cwd())
    if found is None:
        return None
    try:
        return load_project_config(found)
    except ConfigError as exc:
        usage(str(exc))


def summarize(outcome: Outcome, strict: bool) -> int:
    """Print the human summary on stderr and return the exit code."""
    for result in outcome.results:
        if result.io_error:
            err.print(f"[bold red]error:[/] {result.io_error}", soft_wrap=True)
    c = counts(outcome)
    files = len(outcome.results)
    failing = any(f.fails(strict) for f in all_findings(outcome))
    code = 2 if any(r.io_error for r in outcome.results) else 1 if failing else 0
    if c["error"] or c["warning"] or c["note"] or err.is_terminal:
        parts = [f"{n} {k}{'s' if n != 1 else ''}" for k, n in c.items() if n]
        verdict = "[bold red]failed[/]" if code else "[green]passed[/]"
        err.print(
            f"nginxgen lint {verdict}: {files} file{'s' if files != 1 else ''}, "
            f"{', '.join(parts) or 'no findings'}"
            + (" (--strict)" if strict and c["warning"] else ""),
            soft_wrap=True,
        )
    return code


def explain_rule(rule: str) -> None:
    rid = canonical(rule)
    if rid is None or rid not in RULES:
        usage(f"no rule {rule!r}; rules are {', '.join(RULES)}")
    r = RULES[rid]
    print(f"{r.id} {r.name} ({r.severity})\n{r.message}\n\n{r.explanation}")
