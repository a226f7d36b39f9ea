"""Spec → the gateway's cross-cutting policies: rate-limit zones, auth, monitoring.

Pure like the rest of plan/: every nginx variable name and zone name is decided here, so the
templates only lay them out. Routes that share a limit key and rate share one
`limit_req_zone`, so a client's budget is counted once across them.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace

from ..model.names import AUTH_PREFIX
from ..model.plan import ForwardHeader, Gateway, Guard, KeySet, LimitZone
from ..spec import RateLimit, Route, Spec


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
        split=spec.nginx.status_listen != "off"
        and any(p.split is not None for p in spec.services.values()),
        dynamic=spec.nginx.dynamic and bool(spec.http_service_names),
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
