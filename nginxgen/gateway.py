"""Spec → the gateway's cross-cutting policies: rate-limit zones, auth, monitoring.

Pure like plan.py: every nginx variable name and zone name is decided here, so the
templates only lay them out. Routes that share a limit key and rate share one
`limit_req_zone`, so a client's budget is counted once across them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from .spec import RateLimit, Route, Spec

# Variables the templates set and the Lua/log format read; one place names them.
ROUTE_VAR = "nginxgen_route"
CONN_ZONE = "nginxgen_conn_client_ip"
METRICS_DICT = "nginxgen_metrics"
# server_name of the loopback status/metrics server; lint recognises it by this name.
STATUS_SERVER_NAME = "nginxgen_status"
METRICS_DICT_SIZE = "4m"  # ~10k routes x status classes x buckets fits comfortably
AUTH_PREFIX = "/_nginxgen/auth/"  # internal locations for auth_request subrequests
KEY_DIGEST_VAR = "nginxgen_key_digest"  # sha256 of the presented API key (set_by_lua)

# Forwarding headers the gateway does not set itself, cleared on every proxied request
# (routes and auth subrequests): a client must not tell an application which prefix,
# scheme, server or client certificate it came through. X-Forwarded-For, -Proto, -Host,
# -Port and X-Real-IP are set by the gateway instead (templates/location.conf.j2).
FORWARDING_CLEARED = (
    "Forwarded",
    "X-Forwarded-Prefix",
    "X-Forwarded-Scheme",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "X-Forwarded-Uri",
    "X-Forwarded-Path",
    "X-Forwarded-Method",
    "X-Forwarded-Protocol",
    "X-Forwarded-Client-Cert",
)


@dataclass(frozen=True)
class LimitZone:
    name: str
    key: str  # the nginx variable, with its `$`
    size: str
    rate: str


@dataclass(frozen=True)
class KeySet:
    """Accepted API key digests; a `map` turns the request's digest into 1 or 0."""

    variable: str  # map output, without `$`
    digests: tuple[str, ...]


@dataclass(frozen=True)
class ForwardHeader:
    name: str  # as sent to the upstream
    variable: str  # auth_request_set target, without `$`
    source: str  # $upstream_http_* of the auth response, without `$`


@dataclass(frozen=True)
class Guard:
    """One route's policies, ready to lay out inside its location."""

    label: str  # the route's name in metrics and logs
    limit_zone: str | None = None
    burst: int = 0
    nodelay: bool = True
    retry_after: int = 1  # seconds, sent with 429
    limit_conn: int | None = None
    api_key_header: str | None = None
    api_key_var: str | None = None  # $http_* carrying the key, without `$`
    key_set: str | None = None  # KeySet.variable
    auth_location: str | None = None  # internal location doing auth_request
    auth_url: str | None = None
    forward: tuple[ForwardHeader, ...] = ()

    @property
    def limited(self) -> bool:
        return self.limit_zone is not None or self.limit_conn is not None


@dataclass(frozen=True)
class Gateway:
    zones: tuple[LimitZone, ...] = ()
    conn_zone: bool = False
    key_sets: tuple[KeySet, ...] = ()
    status_listen: str | None = None  # the loopback status server, None when off
    metrics: bool = False  # Lua request counters, served on the status server
    json_log: bool = False

    @property
    def lua_modules(self) -> tuple[str, ...]:
        """Lua modules the rendered config requires (preloaded by the master)."""
        mods = []
        if self.key_sets:
            mods.append("nginxgen.apikey")
        if self.metrics:
            mods.append("nginxgen.metrics")
        return tuple(mods)

    @property
    def uses_lua(self) -> bool:
        return bool(self.lua_modules)


def header_var(header: str) -> str:
    """X-Api-Key → http_x_api_key (nginx's name for a request header)."""
    return "http_" + header.lower().replace("-", "_")


def route_label(route: Route) -> str:
    if route.match == "regex":
        # A label is an nginx string, where `$` starts a variable: anchors are left out.
        return "~" + route.path.replace("$", "")
    return f"={route.path}" if route.exact else route.path


def retry_after(limit: RateLimit) -> int:
    """Seconds until the bucket has room for one more request."""
    return max(1, math.ceil(1.0 / limit.per_second))


def plan_gateway(spec: Spec) -> tuple[Gateway, tuple[Guard, ...]]:
    """The shared pieces (zones, key sets, status server) and one Guard per route."""
    zones: dict[tuple[str, str], LimitZone] = {}
    key_sets: dict[tuple[str, ...], KeySet] = {}
    guards = []
    for i, route in enumerate(spec.flat_routes):
        guard = Guard(label=route_label(route), limit_conn=route.limit_conn)
        auth = route.auth
        if auth and auth.api_keys:
            digests = auth.api_keys.digests
            if digests not in key_sets:
                key_sets[digests] = KeySet(f"nginxgen_keys_{len(key_sets)}", digests)
            guard = replace(
                guard,
                api_key_header=auth.api_keys.header,
                api_key_var=header_var(auth.api_keys.header),
                key_set=key_sets[digests].variable,
            )
        elif auth and auth.url:
            name = f"{AUTH_PREFIX}{i}"
            forward = tuple(
                ForwardHeader(h, f"nginxgen_auth_{i}_{_ident(h)}", f"upstream_{header_var(h)}")
                for h in auth.forward_headers
            )
            guard = replace(guard, auth_location=name, auth_url=auth.url, forward=forward)
        if route.rate_limit:
            rl = route.rate_limit
            key = _limit_key(rl, route)
            zkey = (key, rl.rate)
            if zkey not in zones:
                zones[zkey] = LimitZone(
                    f"nginxgen_rl_{len(zones)}_{_ident(key)}_{_ident(rl.rate)}",
                    key,
                    rl.zone_size,
                    rl.rate,
                )
            elif _size_bytes(rl.zone_size) > _size_bytes(zones[zkey].size):
                zones[zkey] = replace(zones[zkey], size=rl.zone_size)
            guard = replace(
                guard,
                limit_zone=zones[zkey].name,
                burst=rl.burst,
                nodelay=rl.nodelay,
                retry_after=retry_after(rl),
            )
        guards.append(guard)
    gateway = Gateway(
        zones=tuple(zones.values()),
        conn_zone=any(r.limit_conn for r in spec.flat_routes),
        key_sets=tuple(key_sets.values()),
        status_listen=None if spec.nginx.status_listen == "off" else spec.nginx.status_listen,
        metrics=spec.nginx.metrics,
        json_log=spec.nginx.access_log_format == "json",
    )
    return gateway, tuple(guards)


def _limit_key(rl: RateLimit, route: Route) -> str:
    if rl.key == "client_ip":
        return "$binary_remote_addr"
    if rl.key == "api_key":
        assert route.auth and route.auth.api_keys  # the spec checks this
        return "$" + header_var(route.auth.api_keys.header)
    return "$" + header_var(rl.key.split(":", 1)[1])


def _ident(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _size_bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", size)
    if not m:
        return 0
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
