"""Snippets: nginx text the spec's author adds at http, server, location, upstream and
stream level, the supported escape hatch for what the spec has no key for.

A snippet is trusted input (it comes from the spec, never from a registry), but it must
stay where it was put: each is parsed by crossplane on its own, inside a skeleton of its
context, and refused when it does not parse, uses a directive that context does not
allow, closes the block it sits in, or sets what nginxgen writes itself there. The parsed
statements are kept, so the round-trip check can find them again in the rendered file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Annotated, Any, Literal

import crossplane
from crossplane.errors import NgxParserBaseException
from pydantic import PrivateAttr, model_validator
from pydantic.functional_validators import BeforeValidator

from .fields import Model

SnippetContext = Literal["http", "server", "location", "upstream", "stream", "stream_server"]

# Where a snippet of each context sits: the blocks around it, outermost first.
_WRAPPERS: dict[str, tuple[str, ...]] = {
    "http": ("http",),
    "server": ("http", "server"),
    "location": ("http", "server", "location /"),
    "upstream": ("http", "upstream nginxgen_snippet"),
    "stream": ("stream",),
    "stream_server": ("stream", "server"),
}
_WHERE = {
    "http": "the http block",
    "server": "a server block",
    "location": "a location block",
    "upstream": "an upstream block",
    "stream": "the stream block",
    "stream_server": "a stream server block",
}
# Directives nginxgen writes in that context itself: a second one would be refused by
# nginx ("is duplicate") or silently win over the spec, so the spec key is the way.
_RESERVED: dict[str, dict[str, str]] = {
    "server": {
        "listen": "listeners come from nginx.listen",
        "server_name": "names come from the host's server_names",
        "ssl_certificate": "certificates come from the host's tls.cert",
        "ssl_certificate_key": "keys come from the host's tls.key",
    },
    "location": {
        "proxy_pass": "nginxgen writes the route's upstream",
        "grpc_pass": "nginxgen writes the route's upstream",
    },
    "upstream": {
        "server": "servers come from the registry",
        "zone": "nginx.upstream_zone sizes it",
        "keepalive": "services.NAME.keepalive sets it",
        **{
            method: "the balancing method comes from services.NAME.balance"
            for method in ("least_conn", "ip_hash", "hash", "random")
        },
    },
    "stream_server": {
        "listen": "the stream's listen key says where it listens",
        "proxy_pass": "nginxgen writes the stream's upstream",
    },
}
# Text from elsewhere would reach nginx unchecked and unwatched.
_NEVER = {"include": "paste the text in: nginxgen checks and watches only what the spec holds"}


class SnippetError(ValueError):
    """One sentence: what is wrong with the snippet, and on which of its lines."""


def parse_snippet(text: str, context: str) -> list[dict[str, Any]]:
    """crossplane's statements for `text` placed in `context`, with lines counted from the
    snippet's first line. Raises SnippetError."""
    if context not in _WRAPPERS:
        raise ValueError(f"unknown snippet context {context!r}")
    if not text.strip():
        raise SnippetError("a snippet must hold at least one directive")
    if "\x00" in text:
        raise SnippetError("a snippet must be text without NUL characters")
    where = _WHERE[context]
    _check_braces(text, where)
    wrappers = _WRAPPERS[context]
    depth = len(wrappers)
    wrapped = "".join(f"{w} {{\n" for w in wrappers) + text.rstrip("\n") + "\n" + "}\n" * depth
    payload = _parse(wrapped)
    for error in payload["errors"]:
        line = error.get("line")
        message = str(error["error"]).split(" in /")[0]
        raise SnippetError(f"{_on_line(line, depth)}{message} in {where}")
    block = payload["config"][0]["parsed"]
    for _ in wrappers:  # _check_braces proved the snippet stays inside
        block = block[0]["block"]
    _check_directives(block, context, depth)
    return [_relative(stmt, depth) for stmt in block]


def _parse(text: str) -> dict[str, Any]:
    fd, path = tempfile.mkstemp(prefix="nginxgen-snippet-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        # Imported here: loading the verify package loads the spec, which is loading now.
        from ..verify.parse import parse_file

        return parse_file(path, strict=True, single=True, check_ctx=True)
    finally:
        os.unlink(path)


def _check_braces(text: str, where: str) -> None:
    """A `}` that closes the snippet's own block would let it write beside it."""
    fd, path = tempfile.mkstemp(prefix="nginxgen-snippet-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            for _ in crossplane.lex(path):
                pass
        except NgxParserBaseException as exc:
            line = exc.lineno
            if str(exc.strerror) == 'unexpected "}"':
                raise SnippetError(
                    f"{_on_line(line, 0)}'}}' closes {where} the snippet is placed in"
                ) from None
            raise SnippetError(f"{_on_line(line, 0)}{exc.strerror}") from None
    finally:
        os.unlink(path)


def _check_directives(block: list[dict[str, Any]], context: str, depth: int) -> None:
    reserved = _RESERVED.get(context, {})
    todo = [(stmt, True) for stmt in block]
    while todo:
        stmt, top = todo.pop()
        name = stmt["directive"]
        why = _NEVER.get(name) or (reserved.get(name) if top else None)
        if why:
            raise SnippetError(
                f"{_on_line(stmt.get('line'), depth)}{name} is not allowed in a snippet: {why}"
            )
        todo.extend((s, False) for s in stmt.get("block", ()))


def _relative(stmt: dict[str, Any], depth: int) -> dict[str, Any]:
    out = {"directive": stmt["directive"], "line": stmt["line"] - depth, "args": stmt["args"]}
    if "block" in stmt:
        out["block"] = [_relative(s, depth) for s in stmt["block"]]
    return out


def _on_line(line: int | None, depth: int) -> str:
    return f"line {line - depth} of the snippet: " if line and line > depth else ""


def statement_shape(statements: list[dict[str, Any]]) -> list[Any]:
    """Statements without line numbers, to compare a snippet with where it was rendered."""
    return [
        (
            s["directive"],
            tuple(s["args"]),
            tuple(statement_shape(s["block"])) if "block" in s else None,
        )
        for s in statements
    ]


class Snippet(Model):
    """Validated nginx text for one context; `parsed` holds crossplane's statements."""

    text: str
    context: SnippetContext
    _parsed: list[dict[str, Any]] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _parse_text(self) -> Snippet:
        self._parsed = parse_snippet(self.text, self.context)
        return self

    @property
    def parsed(self) -> list[dict[str, Any]]:
        return self._parsed


def _snippet_in(context: str) -> BeforeValidator:
    def text_only(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("a snippet is nginx text: write it as a string (e.g. a YAML | block)")
        return {"text": value, "context": context}

    return BeforeValidator(text_only)


HttpSnippet = Annotated[Snippet, _snippet_in("http")]
ServerSnippet = Annotated[Snippet, _snippet_in("server")]
LocationSnippet = Annotated[Snippet, _snippet_in("location")]
UpstreamSnippet = Annotated[Snippet, _snippet_in("upstream")]
StreamSnippet = Annotated[Snippet, _snippet_in("stream")]
StreamServerSnippet = Annotated[Snippet, _snippet_in("stream_server")]


class Snippets(Model):
    """Top-level `snippets:` by context: `server` goes into every host's server block."""

    http: HttpSnippet | None = None
    server: ServerSnippet | None = None
    stream: StreamSnippet | None = None
