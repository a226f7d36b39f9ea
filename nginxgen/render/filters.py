"""The filters every data value passes on its way into nginx.conf: exactly one nginx token,
one Lua string or literal, a vetted balancing argument, a time, a variable we named."""

from __future__ import annotations

import re
from typing import Any

from ..spec import HASH_KEY

_BARE = re.compile(r"^[A-Za-z0-9_./:\[\]@%+=,~*-]+$")


class RenderError(Exception):
    pass


def nginx_token(value: Any) -> str:
    """Exactly one nginx token for `value`: bare when safe, else double-quoted.

    `$` would start a variable inside quotes and control characters have no place in a
    config, so both are refused: the catalog never lets them through, this is the backstop.
    """
    text = str(value)
    if _BARE.match(text):
        return text
    if "$" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise RenderError(f"refusing to place {text!r} in nginx.conf")
    if "'" not in text:
        return "'" + text.replace("\\", "\\\\") + "'"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_string(value: Any) -> str:
    """A Lua double-quoted string literal for `value` (inside *_by_lua_block)."""
    out = []
    for ch in str(value).encode("utf-8"):
        c = chr(ch)
        if c in '\\"':
            out.append("\\" + c)
        elif 0x20 <= ch < 0x7F and c not in "{}$'#;":
            out.append(c)
        else:  # braces too: crossplane's Lua lexer counts them even inside strings
            out.append(f"\\{ch:03d}")
    return '"' + "".join(out) + '"'


# lua_string's escapes for the printable ASCII it does not pass through.
_LUA_ESCAPES = str.maketrans({c: f"\\{ord(c):03d}" for c in "{}$'#;"} | {"\\": "\\\\", '"': '\\"'})
_PLAIN_ASCII = re.compile(r"^[\x20-\x7e]*$")
# nginx refuses a string of 4 KB or more inside a *_by_lua_block, and lua_string spends up
# to 4 bytes a character: long text goes in pieces of 1,000 characters.
LUA_PIECE = 1000


def lua_pieces(text: str) -> str:
    """A Lua list of string literals that concatenate to `text`, each piece small enough
    for nginx (docs/endpoints-feed.md); the same escapes as `lua_string`, at C speed for
    printable ASCII (JSON from json.dumps)."""
    out = []
    for i in range(0, len(text), LUA_PIECE):
        piece = text[i : i + LUA_PIECE]
        if _PLAIN_ASCII.match(piece):
            out.append('"' + piece.translate(_LUA_ESCAPES) + '"')
        else:
            out.append(lua_string(piece))
    return "{" + ", ".join(out) + "}"


def lua_value(value: Any) -> str:
    """A Lua literal for plain data: nil, booleans, numbers, strings, lists and tables.

    Keys and strings go through `lua_string`, so data can never become Lua code.
    """
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RenderError(f"refusing to place {value!r} in a Lua table")
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua_value(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{lua_string(k)}] = {lua_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise RenderError(f"no Lua literal for {type(value).__name__}")


def balance_arg(value: Any) -> str:
    """An argument of the balancing directive: a vetted `hash` key or `consistent`.

    Hash keys are nginx variables, which `nginx_token` rightly refuses; only the forms the
    spec accepts (HASH_KEY) may pass, so registry data can never reach this spot.
    """
    text = str(value)
    if text == "consistent" or HASH_KEY.match(text):
        return text
    raise RenderError(f"refusing to place {text!r} in an upstream balancing directive")


def nginx_regex(value: Any) -> str:
    """A location regex as one quoted token. Unlike `nginx_token` it allows `$` (an anchor
    there: nginx expands no variables in a location regex); the spec checked the pattern."""
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise RenderError(f"refusing to place {text!r} in nginx.conf")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_REWRITE_TO = re.compile(r"/(?:[A-Za-z0-9._~!&()*+,=:@/-]|\$[1-9](?![0-9]))*")


def rewrite_to(value: Any) -> str:
    """A rewrite's replacement as one quoted token: a path whose only `$` are the captures
    `$1`..`$9` (the spec's Rewrite.to allows nothing else); anything else is refused."""
    text = str(value)
    if not _REWRITE_TO.fullmatch(text):
        raise RenderError(f"refusing {text!r} as a rewrite replacement")
    return '"' + text + '"'


def nginx_time(seconds: float) -> str:
    """Seconds → nginx time token ('5s', '250ms')."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_IDENT = re.compile(r"^\$?[a-z_][a-z0-9_]*$")


def nginx_var(name: str) -> str:
    """`$name` for a variable nginxgen named itself; anything else is refused."""
    if not _IDENT.match(name):
        raise RenderError(f"refusing {name!r} as an nginx variable name")
    return name if name.startswith("$") else "$" + name


def comment(value: Any) -> str:
    """Text safe inside a `#` comment: one line, printable."""
    return re.sub(r"[^\x20-\x7e]", "?", str(value))
