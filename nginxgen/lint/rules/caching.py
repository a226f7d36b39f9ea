"""Cache keys: a key built from the client's Host header lets clients split or poison the
cache, whether the key is an nginx directive or built in Lua."""

from __future__ import annotations

import re

from ..findings import rule
from ..tree import Checks, Node, Walk
from .lua import LUA_BLOCKS, lua_code, lua_lines

CACHE_KEYS = ("proxy_cache_key", "fastcgi_cache_key", "uwsgi_cache_key", "scgi_cache_key")
_LUA_HOST = re.compile(r"ngx\.var\.http_host|ngx\.var\[\s*[\"']http_host[\"']\s*\]")
_LUA_KEY = re.compile(r"key", re.IGNORECASE)

CACHE_KEY_CLIENT_HOST = rule(
    "NGX014",
    "cache-key-client-host",
    "warning",
    "cache key built from the client's Host header",
    """`$http_host` (`ngx.var.http_host` in Lua) is whatever the client sent. A
    cache key built from it lets a client create unbounded distinct entries, or
    store a response under a key another virtual host reads (cache poisoning). Use
    `$host` (normalized, falls back to server_name) or the configured server name.""",
)


def cache_key_client_host(node: Node, w: Walk) -> None:
    if any("$http_host" in a for a in node["args"]):
        w.hit(CACHE_KEY_CLIENT_HOST.id, node["line"], f"{node['directive']} uses $http_host")


def lua_cache_key_host(node: Node, w: Walk) -> None:
    code = lua_code(node)
    if code is None or "http_host" not in code:
        return
    for at, text in lua_lines(code, node["line"]):
        if _LUA_HOST.search(text) and _LUA_KEY.search(text):
            w.hit(CACHE_KEY_CLIENT_HOST.id, at, "cache key built from ngx.var.http_host")


RULES = (CACHE_KEY_CLIENT_HOST,)
CHECKS = Checks(
    on={
        **{directive: (cache_key_client_host,) for directive in CACHE_KEYS},
        **{block: (lua_cache_key_host,) for block in LUA_BLOCKS},
    }
)
