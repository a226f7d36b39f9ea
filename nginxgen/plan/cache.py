"""The Redis cache, planned: per-route settings and the table handed to lua/nginxgen/cache.lua.

Every decision (which host goes into the key and upstream, which identity and headers the
key covers, which request headers a cached route strips, which dict holds a route's L1,
how long a stampede lock lives) is made here; the Lua module only executes the table it
receives once, in `init_by_lua_block`, and each cached location passes nothing but its
route id.

What a cached route sends upstream is exactly what its key covers: the host in the key is
the Host sent, the identity the gateway forwards is keyed on, `key_headers` are keyed on,
and the override headers of UNKEYED_OVERRIDE_HEADERS are removed.
"""

from __future__ import annotations

from typing import Any

from ..model.names import CACHE_STATE_DICT, KEY_DIGEST_VAR
from ..model.plan import CacheSetup, Guard, RouteCache
from ..spec import Route, Spec
from ..spec.cache import UNKEYED_OVERRIDE_HEADERS


def route_id(route: Route) -> str:
    """Unique per spec, like the (exact, path) pair nginx's locations are."""
    return ("=" if route.exact else "") + route.path


def route_cache(spec: Spec, index: int, route: Route, guard: Guard) -> RouteCache | None:
    c = route.cache
    if c is None:
        return None
    if c.use_request_host or (c.host is None and spec.nginx.server_name == "_"):
        # The client's Host, keyed on and sent as is: it splits the cache but cannot poison
        # it. A catch-all server (`_`) has no host of its own to send instead.
        key_host = None
    else:
        # The configured host, keyed on and sent upstream whatever the client said: a
        # spoofed Host can neither split the cache nor decide what the backend sees.
        key_host = c.host or spec.nginx.server_name
    identity: tuple[str, ...] = ()
    if c.vary_on_identity is not False:  # the spec refuses false where identity is sent
        identity = tuple(f.variable for f in guard.forward)
        if guard.key_set:
            identity += (KEY_DIGEST_VAR,)
    keyed = {h.lower() for h in c.key_headers}
    return RouteCache(
        id=route_id(route),
        ttl=c.ttl,
        statuses=c.statuses,
        max_body=c.max_body,
        bypass_credentials=c.bypass_credentials,
        allow_no_cache=c.allow_no_cache,
        key_host=key_host,
        identity_vars=identity,
        key_headers=c.key_headers,
        stripped=tuple(h for h in UNKEYED_OVERRIDE_HEADERS if h.lower() not in keyed),
        stampede_wait=c.stampede_wait,
        l1_dict=f"nginxgen_l1_{index}" if c.l1 else None,
        l1_size=c.l1.size if c.l1 else None,
        l1_ttl=c.l1.ttl if c.l1 else 0.0,
    )


def cache_notes(spec: Spec) -> tuple[str, ...]:
    """What the operator should hear about the spec's cache settings."""
    return tuple(
        f"route {route_id(r)!r}: cache.headers is obsolete and ignored: every response "
        "header is stored except hop-by-hop ones and Set-Cookie"
        for r in spec.flat_routes
        if r.cache is not None and r.cache.headers
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
            "max_body": rc.max_body,
            "bypass_credentials": rc.bypass_credentials,
            "allow_no_cache": rc.allow_no_cache,
            "key_host": rc.key_host,
            "identity": list(rc.identity_vars),
            "key_headers": [h.lower() for h in rc.key_headers],
            "stampede_wait": rc.stampede_wait,
            # The lock outlives the wait: a waiter that gives up (the fill took longer than
            # the wait) finds it still held and goes upstream without starting a second fill.
            "lock_ttl": rc.stampede_wait + 1.0,
            "l1_dict": rc.l1_dict,
            "l1_ttl": rc.l1_ttl,
        }
        for rc in setup.routes
    }
    return {"state_dict": CACHE_STATE_DICT, "redis": redis, "routes": routes}
