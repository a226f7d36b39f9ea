"""crossplane's tokens for a config, found by one regular expression instead of per character.

crossplane 0.5.8 lexes a character at a time through four stacked generators: at 5,000
services that is most of a render's time. `lex` yields exactly the tokens, lines, quote
flags and syntax errors crossplane's `lex` yields, lazily in the same order (an error is
raised where crossplane raises it, after the tokens before it), for the text our
templates produce: bare and quoted words, `{ } ;`, comments, and `*_by_lua_block`
bodies. Text that uses what this does not reproduce (a backslash escape, `${...}`, a
quoted or `set_by_lua_block` directive, an unterminated quote or Lua block, no final
newline) goes to crossplane's own lexer unchanged, so the result never differs
(tests/verify/test_lex.py compares both on generated text).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from crossplane import lexer as _lexer
from crossplane.errors import NgxParserSyntaxError

Token = tuple[str, int, bool]

# Leading whitespace and one token per match (half the matches of one each).
_TOKEN = re.compile(
    r"""(?P<ws>\s*)(?:(?P<comment>\#[^\n]*)|"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'"""
    r"""|(?P<punct>[{};])|(?P<word>[^\s{};"'\#][^\s{};]*))?"""
)
# Inside a Lua block: what changes the brace depth or hides braces from it.
_LUA = re.compile(r"""--[^\n]*|"[^"]*"|'[^']*'|[{}]|[^-{}"']+|-""")
_CROSSPLANE_LEX = _lexer.lex


class _Unsupported(Exception):
    """Text this lexer does not reproduce exactly: crossplane's lexer takes it."""


def lex(filename: str) -> Iterator[Token]:
    """Drop-in for crossplane.lexer.lex (same file reading: UTF-8, errors replaced)."""
    with io.open(filename, encoding="utf-8", errors="replace") as f:  # noqa: UP020 - as crossplane
        text = f.read()
    try:
        tokens, error = _scan(text)
    except _Unsupported:
        yield from _CROSSPLANE_LEX(filename)
        return
    yield from tokens
    if error is not None:
        raise NgxParserSyntaxError(error[0], filename, error[1])


def _lua_lexers() -> frozenset[str]:
    """Directives crossplane hands to its Lua plugin; any other external lexer: unsupported."""
    names = set()
    for name, fn in _lexer.EXTERNAL_LEXERS.items():
        if type(getattr(fn, "__self__", None)).__name__ != "LuaBlockPlugin":
            raise _Unsupported(name)
        names.add(name)
    return frozenset(names)


def _scan(text: str) -> tuple[list[Token], tuple[str, int] | None]:
    """All tokens up to the first brace error, and that error (reason, line) if any."""
    if "\\" in text or "${" in text or not text.endswith("\n"):
        raise _Unsupported()
    lua = _lua_lexers()
    if "set_by_lua_block" in lua and "set_by_lua_block" in text:
        raise _Unsupported()
    tokens: list[Token] = []
    append = tokens.append
    line, depth, pos, end = 1, 0, 0, len(text)
    directive = True  # crossplane's next_token_is_directive
    match = _TOKEN.match
    while pos < end:
        m = match(text, pos)
        assert m is not None  # every group may match empty
        kind = m.lastgroup
        pos = m.end()
        space = m.group("ws")
        if space:
            line += space.count("\n")
        if kind == "ws":  # whitespace up to the end
            if pos < end:  # an unterminated quote: crossplane drops it silently
                raise _Unsupported()
            break
        value = m.group(kind)  # type: ignore[arg-type]
        if kind == "word":
            append((value, line, False))
            following = text[pos] if pos < end else ""
            if directive and value in lua and following.isspace():
                pos, line = _lua_block(text, pos, line, tokens)
                directive = True
            else:
                directive = False
        elif kind == "punct":
            if value == "}":
                depth -= 1
                if depth < 0:
                    return tokens, ('unexpected "}"', line)
            elif value == "{":
                depth += 1
            append((value, line, False))
            directive = True
        elif kind == "comment":
            append((value, line, False))
        else:  # a quoted word
            if directive and value in lua:
                raise _Unsupported()
            append((value, line, True))
            line += value.count("\n")
            directive = False
    if depth > 0:
        return tokens, ('unexpected end of file, expecting "}"', tokens[-1][1])
    return tokens, None


def _lua_block(text: str, pos: int, line: int, tokens: list[Token]) -> tuple[int, int]:
    """The body of a `*_by_lua_block` as one quoted token, then `;` (crossplane's plugin):
    braces count except in strings and `--` comments, whose text is kept as written."""
    start = pos
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos == len(text) or text[pos] != "{":
        raise _Unsupported()  # crossplane's plugin raises its own error here
    line += text.count("\n", start, pos)
    body_start = pos = pos + 1
    depth = 1
    match = _LUA.match
    while pos < len(text):
        m = match(text, pos)
        if m is None:  # an unterminated Lua string
            raise _Unsupported()
        piece = m.group()
        if piece == "{":
            depth += 1
        elif piece == "}":
            depth -= 1
            if depth == 0:
                body = text[body_start : m.start()]
                line += body.count("\n")
                tokens.append((body, line, True))
                tokens.append((";", line, False))
                return m.end(), line
        pos = m.end()
    raise _Unsupported()  # the block never closes
