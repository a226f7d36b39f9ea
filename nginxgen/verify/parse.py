"""crossplane, taught the directives of the modules nginxgen emits (Lua, NDK).

crossplane 0.5.8's `register_external_directives` uses `iteritems` and crashes on
Python 3, so the entries go straight into `crossplane.analyzer.DIRECTIVES`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import crossplane
from crossplane import analyzer as _a
from crossplane import parser as _parser

from .lex import lex

_HTTP = _a.NGX_HTTP_MAIN_CONF
_SRV = _a.NGX_HTTP_SRV_CONF
_LOC = _a.NGX_HTTP_LOC_CONF | _a.NGX_HTTP_LIF_CONF
_ANY_HTTP = _HTTP | _SRV | _LOC
_PHASE = _HTTP | _SRV | _LOC  # rewrite/access/content/log handlers
_T1, _T2, _FLAG = _a.NGX_CONF_TAKE1, _a.NGX_CONF_TAKE2, _a.NGX_CONF_FLAG

LUA_DIRECTIVES: dict[str, list[int]] = {
    "lua_package_path": [_HTTP | _T1],
    "lua_package_cpath": [_HTTP | _T1],
    "lua_code_cache": [_ANY_HTTP | _FLAG],
    "lua_shared_dict": [_HTTP | _T2],
    "lua_socket_log_errors": [_ANY_HTTP | _FLAG],
    "lua_socket_pool_size": [_ANY_HTTP | _T1],
    "lua_socket_keepalive_timeout": [_ANY_HTTP | _T1],
    "lua_socket_connect_timeout": [_ANY_HTTP | _T1],
    "lua_socket_read_timeout": [_ANY_HTTP | _T1],
    "lua_socket_send_timeout": [_ANY_HTTP | _T1],
    "lua_need_request_body": [_ANY_HTTP | _FLAG],
    "lua_max_pending_timers": [_HTTP | _T1],
    "lua_max_running_timers": [_HTTP | _T1],
    "init_by_lua_block": [_HTTP | _T1],
    "init_by_lua_file": [_HTTP | _T1],
    "init_worker_by_lua_block": [_HTTP | _T1],
    "init_worker_by_lua_file": [_HTTP | _T1],
    "set_by_lua_block": [_SRV | _a.NGX_HTTP_SIF_CONF | _LOC | _T2],
    "balancer_by_lua_block": [_a.NGX_HTTP_UPS_CONF | _T1],
    "balancer_by_lua_file": [_a.NGX_HTTP_UPS_CONF | _T1],
}
for _phase in ("rewrite", "access", "content", "header_filter", "body_filter", "log"):
    LUA_DIRECTIVES[f"{_phase}_by_lua_block"] = [_PHASE | _T1]
    LUA_DIRECTIVES[f"{_phase}_by_lua_file"] = [_PHASE | _T1]
# NDK's set_var family is not used by nginxgen; listed so hand-written configs lint clean.
LUA_DIRECTIVES["set_escape_uri"] = [_SRV | _LOC | _a.NGX_HTTP_SIF_CONF | _T2]

# Newer than crossplane 0.5.8's table: nginx 1.19.4 (a TLS default server needs no cert).
LUA_DIRECTIVES["ssl_reject_handshake"] = [_HTTP | _SRV | _FLAG]

for _name, _masks in LUA_DIRECTIVES.items():
    _a.DIRECTIVES.setdefault(_name, _masks)

# Inside these blocks nginx reads "key value;" pairs, not directives. crossplane's strict
# mode would call every key an unknown directive, so analysis stops at their boundary.
_DATA_BLOCKS = frozenset({"map", "types", "geo", "split_clients", "match", "charset_map"})
_crossplane_analyze = _parser.analyze


def analyze(
    fname: str, stmt: dict[str, Any], term: str, ctx: tuple[str, ...] = (), **kw: Any
) -> None:
    """crossplane's analysis of one statement, skipped inside data blocks."""
    if ctx and ctx[-1] in _DATA_BLOCKS:
        return
    _crossplane_analyze(fname, stmt, term, ctx, **kw)


_parser.analyze = analyze
# The same tokens as crossplane's lexer, several times faster on a large config (lex.py).
_parser.lex = lex


def parse_file(
    path: str,
    *,
    strict: bool = False,
    single: bool = False,
    comments: bool = False,
    check_ctx: bool = True,
) -> dict[str, Any]:
    """crossplane's payload for `path` (errors collected, not raised).

    Relative `include` paths resolve against the directory of `path`, as nginx resolves
    them against the directory of the file given to `-c` (its conf prefix).
    """
    payload: dict[str, Any] = crossplane.parse(
        path,
        catch_errors=True,
        strict=strict,
        single=single,
        comments=comments,
        check_ctx=check_ctx,
        check_args=True,
    )
    # crossplane's recursive inner function closes over itself and over the payload, a
    # reference cycle that would keep the whole parsed tree (640,000 objects at 10,000
    # services) alive until the cycle collector runs. Hand out a copy and empty the
    # original, so the tree goes away as soon as the caller drops it.
    out = dict(payload)
    payload.clear()
    return out


def parse_text(text: str, *, strict: bool = False) -> dict[str, Any]:
    """Parse config text (no includes followed) through a temporary file."""
    fd, path = tempfile.mkstemp(prefix="nginxgen-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return parse_file(path, strict=strict, single=True)
    finally:
        os.unlink(path)
