"""The Redis cache, planned: per-route settings and the table handed to lua/nginxgen/cache.lua.

Every decision (which host goes into the key, which dict holds a route's L1, how long a
stampede lock lives) is made here; the Lua module only executes the table it receives
once, in `init_by_lua_block`, and each cached location passes nothing but its route id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .spec import RedisSpec, Route, Spec

STATE_DICT = "nginxgen_cache"  # stampede locks and Redis health, shared by all workers
STATE_DICT_SIZE = "1m"


@dataclass(frozen=True)
class RouteCache:
    id: str  # what the location passes to the Lua module
    ttl: float
    statuses: tuple[int, ...]
    headers: tuple[str, ...]  # stored besides Content-Type
    max_body: int
    bypass_credentials: bool
    allow_no_cache: bool
    key_host: str | None  # None: the client's Host (route asked for it)
    stampede_wait: float
    l1_dict: str | None
    l1_size: str | None
    l1_ttl: float


@dataclass(frozen=True)
class CacheSetup:
    redis: RedisSpec
    routes: tuple[RouteCache, ...]

    @property
    def env(self) -> tuple[str, ...]:
        """Environment variables nginx must pass to Lua (`env NAME;` in the main context)."""
        return (self.redis.password_env,) if self.redis.password_env else ()

    @property
    def shared_dicts(self) -> tuple[tuple[str, str], ...]:
        l1 = tuple((r.l1_dict, r.l1_size) for r in self.routes if r.l1_dict and r.l1_size)
        return ((STATE_DICT, STATE_DICT_SIZE),) + l1


def route_id(route: Route) -> str:
    """Unique per spec, like the (exact, path) pair nginx's locations are."""
    return ("=" if route.exact else "") + route.path


def route_cache(spec: Spec, index: int, route: Route) -> RouteCache | None:
    c = route.cache
    if c is None:
        return None
    if c.use_request_host:
        key_host = None
    else:
        # The configured host, never the client's: a spoofed Host must not split or
        # poison the cache. server_name "_" (catch-all) keys on a fixed placeholder.
        key_host = c.host or spec.nginx.server_name
    return RouteCache(
        id=route_id(route),
        ttl=c.ttl,
        statuses=c.statuses,
        headers=c.headers,
        max_body=c.max_body,
        bypass_credentials=c.bypass_credentials,
        allow_no_cache=c.allow_no_cache,
        key_host=key_host,
        stampede_wait=c.stampede_wait,
        l1_dict=f"nginxgen_l1_{index}" if c.l1 else None,
        l1_size=c.l1.size if c.l1 else None,
        l1_ttl=c.l1.ttl if c.l1 else 0.0,
    )


def cache_setup(spec: Spec, routes: tuple[RouteCache, ...]) -> CacheSetup | None:
    if not routes or spec.redis is None:
        return None
    return CacheSetup(redis=spec.redis, routes=routes)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def lua_config(setup: CacheSetup) -> dict[str, Any]:
    """The table `require("nginxgen.cache").init(...)` receives (rendered by `| lua_value`)."""
    r = setup.redis
    redis: dict[str, Any] = {
        "host": r.host,
        "port": r.port,
        "socket": r.socket,
        "db": r.db,
        "password_env": r.password_env,
        "connect_timeout": _ms(r.connect_timeout),
        "read_timeout": _ms(r.read_timeout),
        "pool_size": r.pool_size,
        "idle_timeout": _ms(r.idle_timeout),
        "key_prefix": r.key_prefix,
        "errors_to_skip": r.errors_to_skip,
        "cooldown": r.cooldown,
        # Keepalive pools are per host:port by default; db and auth must not be shared
        # with other Lua code that talks to the same Redis.
        "pool": f"nginxgen:{r.socket or f'{r.host}:{r.port}'}:{r.db}",
    }
    routes = {
        rc.id: {
            "ttl": _ms(rc.ttl),
            "statuses": list(rc.statuses),
            "headers": ["Content-Type", *rc.headers],
            "max_body": rc.max_body,
            "bypass_credentials": rc.bypass_credentials,
            "allow_no_cache": rc.allow_no_cache,
            "key_host": rc.key_host,
            "stampede_wait": rc.stampede_wait,
            # A lock outlives the longest wait, so late waiters never start a second fill.
            "lock_ttl": rc.stampede_wait + 1.0,
            "l1_dict": rc.l1_dict,
            "l1_ttl": rc.l1_ttl,
        }
        for rc in setup.routes
    }
    return {"state_dict": STATE_DICT, "redis": redis, "routes": routes}
