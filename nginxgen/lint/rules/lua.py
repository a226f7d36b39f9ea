"""Lua inside nginx: Redis clients that can stall requests or exhaust connections, and a
package path that hides the default modules."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..findings import rule
from ..tree import Checks, Node, Walk

_REDIS = re.compile(r"""require\s*\(?\s*["'](?:resty|nginx)\.redis["']""")
LUA_BLOCKS = tuple(
    f"{phase}_by_lua_block"
    for phase in (
        "init", "init_worker", "set", "rewrite", "access", "content", "header_filter",
        "body_filter", "log", "balancer", "ssl_certificate",
    )
)  # fmt: skip


def lua_code(node: Node) -> str | None:
    """The code of a *_by_lua_block (set_by_lua_block $var { code }: the last argument)."""
    return node["args"][-1] if node["args"] else None


def lua_lines(code: str, first: int) -> Iterable[tuple[int, str]]:
    """Lines of a Lua block with their line number in the file (the block opens on `first`)."""
    for offset, text in enumerate(code.split("\n")):
        yield first + offset, text


def check_lua_block(node: Node, w: Walk) -> None:
    code = lua_code(node)
    if code is not None:
        lua_redis(code, node["line"], w)


LUA_REDIS_NO_TIMEOUT = rule(
    "NGX012",
    "lua-redis-no-timeout",
    "warning",
    "Lua Redis client without timeouts",
    """A Redis call without `set_timeout`/`set_timeouts` waits for
    lua_socket_read_timeout (60s by default): a slow Redis stalls every request that
    touches the cache. Set a timeout of a few hundred milliseconds and serve from
    the backend when it fires.""",
)

LUA_REDIS_NO_KEEPALIVE = rule(
    "NGX013",
    "lua-redis-no-keepalive",
    "warning",
    "Lua Redis client without set_keepalive",
    """Without `set_keepalive` every request opens (and closes) a new TCP connection
    to Redis. Under load that exhausts ephemeral ports and Redis's connection limit.
    Return the connection to the pool with `red:set_keepalive(idle_ms, size)`.""",
)


def lua_redis(code: str, line: int, w: Walk) -> None:
    m = _REDIS.search(code)
    if m is None:
        return
    at = line + code.count("\n", 0, m.start())
    if "set_timeout" not in code:  # set_timeout (nginx.redis) and set_timeouts (resty.redis)
        w.hit(LUA_REDIS_NO_TIMEOUT.id, at, "Redis client used without set_timeout/set_timeouts")
    if "set_keepalive" not in code:
        w.hit(LUA_REDIS_NO_KEEPALIVE.id, at, "Redis client used without set_keepalive")


LUA_PACKAGE_PATH_NO_DEFAULT = rule(
    "NGX015",
    "lua-package-path-no-default",
    "warning",
    "lua_package_path without the trailing ';;'",
    """`;;` stands for the default search path. Without it, modules that ship with
    OpenResty or the distribution (resty.core, resty.redis, cjson) are not found
    and `require` fails at runtime, not at `nginx -t`.""",
)


def lua_package_path_no_default(node: Node, w: Walk) -> None:
    if node["args"] and not node["args"][0].endswith(";;"):
        w.hit(
            LUA_PACKAGE_PATH_NO_DEFAULT.id,
            node["line"],
            f"{node['directive']} does not end with ';;'",
        )


RULES = (LUA_REDIS_NO_TIMEOUT, LUA_REDIS_NO_KEEPALIVE, LUA_PACKAGE_PATH_NO_DEFAULT)
CHECKS = Checks(
    on={
        **{block: (check_lua_block,) for block in LUA_BLOCKS},
        "lua_package_path": (lua_package_path_no_default,),
        "lua_package_cpath": (lua_package_path_no_default,),
    }
)
