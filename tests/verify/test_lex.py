"""The fast lexer yields exactly crossplane's tokens, lines, quote flags and errors."""

from __future__ import annotations

from pathlib import Path

import crossplane  # noqa: F401 - registers the Lua plugin's lexer
from crossplane import lexer as cp_lexer
from crossplane.errors import NgxParserBaseException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nginxgen.verify import lex as fast

PIECES = [
    " ", "\n", "\t", "\r\n", "\u00a0", ";", "{", "}", '"', "'", "#", "#c\n", "-", "--",
    "a", "b1", "$x", "${", "\\", "server", "location", "content_by_lua_block",
    "init_by_lua_block", "set_by_lua_block", " { ", "\"q{}\"", "'s;'", "é",
]  # fmt: skip


def both(path: Path) -> tuple[object, object]:
    def run(lexer):  # type: ignore[no-untyped-def]
        out: list[object] = []
        try:
            for tok in lexer(str(path)):
                out.append(tok)
        except NgxParserBaseException as exc:
            out.append(("error", str(exc)))
        return out

    return run(cp_lexer.lex), run(fast.lex)


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.booleans())
def test_same_tokens_as_crossplane(tmp_path: Path, pieces: list[str], newline: bool) -> None:
    path = tmp_path / "n.conf"
    path.write_text("".join(pieces) + ("\n" if newline else ""), encoding="utf-8")
    ours, theirs = both(path)
    assert theirs == ours


def test_rendered_shapes(tmp_path: Path) -> None:
    text = (
        '# a comment\nhttp {\n    init_by_lua_block {\n        require("a") -- } not a brace\n'
        '        local t = { x = "}" }\n    }\n    server { listen 80; location / {'
        ' return 200 "ok\n two"; } }\n}\n'
    )
    path = tmp_path / "n.conf"
    path.write_text(text, encoding="utf-8")
    ours, theirs = both(path)
    assert theirs == ours
    assert fast._scan(text)[1] is None  # the fast path, not the fallback


def test_errors_where_crossplane_raises(tmp_path: Path) -> None:
    for text in ("a { b; }\n}\nc;\n", "a {\n b {\n"):
        path = tmp_path / "n.conf"
        path.write_text(text, encoding="utf-8")
        ours, theirs = both(path)
        assert theirs == ours


FAST = [p for p in PIECES if p not in ("\\", "${", "set_by_lua_block")]


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(FAST), max_size=40))
def test_same_tokens_on_the_fast_path(tmp_path: Path, pieces: list[str]) -> None:
    path = tmp_path / "n.conf"
    path.write_text("".join(pieces) + "\n", encoding="utf-8")
    ours, theirs = both(path)
    assert theirs == ours
