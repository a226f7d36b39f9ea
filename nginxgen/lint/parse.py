"""Parse a config for lint: crossplane's parser as a loop, careful about what it reads.

crossplane 0.5.8's `parse()` recurses once per block, so a config nested about 1,000
blocks deep comes back as "maximum recursion depth exceeded" with nothing parsed; it
opens whatever an include names (`include /dev/zero;` reads until memory runs out, a FIFO
blocks forever); and it grows a context tuple per level, which makes deep nesting
quadratic. This is the same algorithm producing the same payload (crossplane's lexer and
analyzer do the work), with an explicit stack, and every file checked before it is read:
a regular file, at most MAX_FILE_BYTES, at most MAX_TOTAL_BYTES for a file and all it
includes. A refused include is an error at its `include` line, like a missing one.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator
from typing import Any

from crossplane.analyzer import CONTEXTS, enter_block_ctx
from crossplane.errors import NgxParserBaseException, NgxParserDirectiveError
from crossplane.lexer import _balance_braces, _lex_file_object
from crossplane.parser import _prepare_if_args

from ..verify.parse import analyze
from .findings import rule

# The parse is this rule's check: every error it collects is reported as NGX000.
SYNTAX = rule(
    "NGX000",
    "syntax",
    "error",
    "nginx cannot parse this",
    """A syntax error, a directive in a context where nginx does not allow it, a wrong
    number of arguments, or an include that matches no readable file. nginx refuses
    to start or reload on any of these. Syntax errors cannot be suppressed inline.""",
)

MIB = 1024 * 1024
MAX_FILE_BYTES = 64 * MIB  # a generated config for 10,000 services is about 17 MB
MAX_TOTAL_BYTES = 256 * MIB

Token = tuple[str, int, bool]
Payload = dict[str, Any]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class Refused(Exception):
    """A file lint will not read; str() says which and why."""


class _Budget:
    """Bytes read so far for one top-level file and its includes."""

    def __init__(self) -> None:
        self.used = 0

    def check(self, path: str) -> None:
        """Refuse what nginx could not load either, or lint should not try to."""
        try:
            st = os.stat(path)
        except OSError as exc:
            raise Refused(str(exc)) from None  # crossplane's wording for a missing file
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
            raise Refused(f"{path} is {kind}, not a regular file; not read")
        if st.st_size > MAX_FILE_BYTES:
            raise Refused(
                f"{path} is {st.st_size / MIB:.0f} MiB, more than the "
                f"{MAX_FILE_BYTES // MIB} MiB lint reads from one file; not read"
            )
        if self.used + st.st_size > MAX_TOTAL_BYTES:
            raise Refused(
                f"{path} would take the config and its includes past "
                f"{MAX_TOTAL_BYTES // MIB} MiB; not read"
            )

    def read(self, path: str) -> str:
        self.check(path)
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)  # a file that grew since the check
        except OSError as exc:
            raise Refused(str(exc)) from None
        if len(data) > MAX_FILE_BYTES:
            raise Refused(f"{path} grew past {MAX_FILE_BYTES // MIB} MiB while read; not read")
        self.used += len(data)
        return data.decode("utf-8", errors="replace")


def _tokens(text: str, path: str) -> Iterator[Token]:
    return _balance_braces(_lex_file_object((text,)), path)


def _child_ctx(stmt: dict[str, Any], ctx: tuple[str, ...]) -> tuple[str, ...]:
    """crossplane's context for a block's contents, kept short. Below a context crossplane
    does not know, nothing is analysed except a `location` under `http`, which it maps back
    to ('http', 'location'): so an unknown context needs only its first and last names."""
    inner: tuple[str, ...] = enter_block_ctx(stmt, ctx)
    if len(inner) > 3 and inner not in CONTEXTS:
        return (inner[0], "\0", inner[-1])
    return inner


def parse_config(path: str, *, comments: bool = False, check_ctx: bool = True) -> Payload:
    """crossplane's payload for `path` and what it includes (errors collected, not raised).

    Relative `include` paths resolve against the directory of `path`, as nginx resolves
    them against the directory of the file given to `-c` (its conf prefix).
    """
    config_dir = os.path.dirname(path)
    # "refused": files not read (a device, FIFO, huge file): tools that would read them
    # anyway (nginx -t, gixy) must not run on this config.
    payload: Payload = {"status": "ok", "errors": [], "config": [], "refused": []}
    budget = _Budget()
    includes: list[tuple[str, tuple[str, ...]]] = [(path, ())]
    included = {os.path.realpath(path): 0}

    def error(parsing: dict[str, Any], message: str, line: int | None) -> None:
        parsing["status"] = payload["status"] = "failed"
        parsing["errors"].append({"error": message, "line": line})
        payload["errors"].append({"file": parsing["file"], "error": message, "line": line})

    def include(parsing: dict[str, Any], stmt: dict[str, Any], ctx: tuple[str, ...]) -> None:
        pattern = stmt["args"][0]
        if not os.path.isabs(pattern):
            pattern = os.path.join(config_dir, pattern)
        stmt["includes"] = []
        names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for name in names:
            key = os.path.realpath(name)
            if key not in included:
                try:
                    budget.check(name)
                except Refused as exc:
                    error(parsing, str(exc), stmt["line"])
                    if os.path.exists(name):
                        payload["refused"].append(name)
                    continue
                included[key] = len(includes)
                includes.append((name, ctx))
            stmt["includes"].append(included[key])

    # The list grows as `include` directives are found.
    for fname, ctx in includes:
        parsing: dict[str, Any] = {"file": fname, "status": "ok", "errors": [], "parsed": []}
        payload["config"].append(parsing)
        try:
            text = budget.read(fname)
        except Refused as exc:
            error(parsing, str(exc), None)
            payload["refused"].append(fname)
            continue
        try:
            parsed = _parse(parsing, _tokens(text, fname), ctx, comments, check_ctx, error, include)
        except NgxParserBaseException as exc:  # unbalanced braces, from the lexer
            error(parsing, str(exc), exc.lineno)
        except StopIteration:  # the file ends inside a directive
            error(parsing, f'unexpected end of file, expecting ";" or "}}" in {fname}', None)
        else:
            parsing["parsed"] = parsed
    return payload


def _parse(
    parsing: dict[str, Any],
    tokens: Iterator[Token],
    ctx: tuple[str, ...],
    comments: bool,
    check_ctx: bool,
    error: Any,
    include: Any,
) -> list[dict[str, Any]]:
    """One file's statements: crossplane's `_parse`, with the open blocks on a stack."""
    fname = parsing["file"]
    top: list[dict[str, Any]] = []
    blocks: list[tuple[list[dict[str, Any]], tuple[str, ...]]] = [(top, ctx)]
    skipping = 0  # depth inside a block dropped after an error (crossplane's `consume`)
    for token, lineno, quoted in tokens:
        if token == "}" and not quoted:
            if skipping:
                skipping -= 1
            elif len(blocks) == 1:
                break
            else:
                blocks.pop()
            continue
        if skipping:
            if token == "{" and not quoted:
                skipping += 1
            continue
        parsed, ctx = blocks[-1]
        stmt: dict[str, Any] = {"directive": token, "line": lineno, "args": []}
        if token.startswith("#") and not quoted:
            if comments:
                stmt["directive"] = "#"
                stmt["comment"] = token[1:]
                parsed.append(stmt)
            continue
        args, comments_in_args = stmt["args"], []
        term, _, quoted = next(tokens)
        while term not in ("{", ";", "}") or quoted:
            if term.startswith("#") and not quoted:
                comments_in_args.append(term[1:])
            else:
                args.append(term)
            term, _, quoted = next(tokens)
        if stmt["directive"] == "if":
            _prepare_if_args(stmt)
        try:
            analyze(fname, stmt, term, ctx, strict=False, check_ctx=check_ctx, check_args=True)
        except NgxParserDirectiveError as exc:
            error(parsing, str(exc), exc.lineno)
            if exc.strerror.endswith(' is not terminated by ";"'):
                if term != "}":
                    skipping = 1  # the block it opened is dropped whole
                elif len(blocks) == 1:
                    break
                else:
                    blocks.pop()  # its `}` closed the block around it
            continue
        if stmt["directive"] == "include":
            include(parsing, stmt, ctx)
        if term == "{" and not quoted:
            stmt["block"] = []
            blocks.append((stmt["block"], _child_ctx(stmt, ctx)))
        parsed.append(stmt)
        for comment in comments_in_args:
            parsed.append({"directive": "#", "line": stmt["line"], "args": [], "comment": comment})
    return top
