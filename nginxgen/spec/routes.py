"""A route: which requests (path, match, methods) go to which service, and how."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ValidationInfo, field_validator, model_validator
from pydantic.functional_validators import BeforeValidator

from .aggregate import Aggregate, ImageFit, bff_conflict
from .cache import UNKEYED_OVERRIDE_HEADERS, CacheSpec, identity_problem
from .fields import Model, ServiceName, Token, off_is_none
from .gateway import Auth, OptionalLimitConn, OptionalRateLimit
from .http import (
    Headers,
    Methods,
    OptionalCors,
    Rewrite,
    UpstreamTLS,
    allowed_methods,
    check_regex,
)
from .policies import Failover, Timeouts
from .snippets import LocationSnippet

MATCHES = ("prefix", "exact", "regex")
# What a WebSocket or SSE route allows between two messages unless its spec says otherwise
# (a proxied request's read timeout is the idle time between two reads).
LONG_READ = "1h"


class Route(Model):
    # Before `path`: the path's validation depends on the kind of match.
    match: Literal["prefix", "exact", "regex"] = "prefix"
    path: str
    service: ServiceName | None = None  # None only for an aggregate route
    exact: bool = False  # the older spelling of match: exact (`location = path`)
    methods: Methods | None = None  # None: every method; others get 405
    strip_prefix: bool = False  # send the path without the route prefix upstream
    rewrite: Rewrite | None = None
    headers: Headers | None = None  # None: as the gateway always sends them
    cors: OptionalCors = None
    websocket: bool = False  # Upgrade passed through; keepalive kept for other requests
    streaming: bool = False  # SSE / long responses: delivered as they come, unbuffered
    protocol: Literal["http", "grpc"] = "http"
    upstream_tls: UpstreamTLS | None = None
    snippets: LocationSnippet | None = None
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()
    client_max_body_size: Token | None = None
    rate_limit: OptionalRateLimit = None
    limit_conn: OptionalLimitConn = None
    auth: Annotated[Auth | None, BeforeValidator(off_is_none)] = None
    cache: CacheSpec | None = None
    aggregate: Aggregate | None = None  # several services, one JSON answer (spec/aggregate.py)
    image_fit: ImageFit | None = None  # images resized to the device's width

    @model_validator(mode="before")
    @classmethod
    def _exact_is_a_match(cls, data: Any) -> Any:
        """`exact: true` keeps working: it is `match: exact`, and `exact` follows `match`
        (plan.py reads `exact`)."""
        if not isinstance(data, dict):
            return data
        exact, match = data.get("exact"), data.get("match")
        if exact is True:
            if match not in (None, "exact"):
                raise ValueError(f"exact: true contradicts match: {match}")
            return {**data, "match": "exact"}
        if exact is False and match == "exact":
            raise ValueError("exact: false contradicts match: exact")
        if match == "exact":
            return {**data, "exact": True}
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("match") == "regex":
            return check_regex(v)
        if not re.fullmatch(r"/[A-Za-z0-9._~!&'()*+,=:@%/-]*", v) or "'" in v:
            raise ValueError(f"must start with '/' and hold only URL path characters: {v!r}")
        return v

    @model_validator(mode="after")
    def _rate_key_needs_api_keys(self) -> Route:
        if self.rate_limit and self.rate_limit.key == "api_key":
            if self.auth is None or self.auth.api_keys is None:
                raise ValueError("rate_limit.key api_key needs auth.api_keys on the same route")
        return self

    @model_validator(mode="after")
    def _cache_keys_on_identity(self) -> Route:
        if self.cache is not None:
            auth = self.auth
            forwarded = auth.forward_headers if auth else ()
            problem = identity_problem(self.cache, forwarded, bool(auth and auth.api_keys))
            if problem:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _one_meaning(self) -> Route:
        """Keys that cannot mean anything together are refused, one sentence each."""
        problem = route_conflict(self)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def allowed_methods(self) -> tuple[str, ...] | None:
        """The methods that pass (GET brings HEAD); None: all of them."""
        return allowed_methods(self.methods) if self.methods is not None else None

    @property
    def services(self) -> tuple[str, ...]:
        """The services this route sends requests to: its own, or its parts'."""
        if self.aggregate is not None:
            return tuple(dict.fromkeys(p.service for p in self.aggregate.parts.values()))
        return (self.service,) if self.service else ()

    @property
    def long_lived(self) -> bool:
        """A WebSocket or a stream: one request may stay open for as long as it talks."""
        return self.websocket or self.streaming


def route_conflict(r: Route) -> str | None:
    bff = bff_conflict(r)
    if bff:
        return bff
    if r.protocol == "grpc":
        for key, used in (
            ("websocket: true", r.websocket),
            ("streaming: true", r.streaming),
            ("cache", r.cache is not None),
            ("cors", r.cors is not None),
            ("methods", r.methods is not None),
            ("strip_prefix", r.strip_prefix),
            ("rewrite", r.rewrite is not None),
        ):
            if used:
                return f"{key} cannot go with protocol: grpc ({_GRPC_WHY[key]})"
    if r.cache is not None and r.long_lived:
        what = "websocket" if r.websocket else "streaming"
        return (
            f"{what}: true cannot go with cache (a connection that stays open has no "
            "answer to store)"
        )
    if r.websocket and r.methods is not None and "GET" not in r.methods:
        return "websocket: true needs GET in methods (a WebSocket opens with a GET)"
    if r.strip_prefix and r.match == "regex":
        return "strip_prefix needs match: prefix or exact (a regex has no prefix); use rewrite"
    if r.strip_prefix and r.rewrite is not None:
        return "strip_prefix and rewrite both change the upstream path; use one of them"
    if r.cors is not None and r.methods is not None and r.cors.methods is not None:
        extra = [m for m in r.cors.methods if m not in allowed_methods(r.methods)]
        if extra:
            return f"cors.methods allows {', '.join(extra)}, which the route's methods refuse"
    response = r.headers.response_names() if r.headers else []
    if r.cors is not None and any(n.startswith("access-control-") for n in response):
        return "Access-Control-* response headers are set by cors; remove them from headers"
    if (
        r.cache is not None
        and r.headers
        and any(n.lower() == "host" for n in r.headers.request.set)
    ):
        return "headers.request.set.Host cannot go with cache (cache.host sets what is sent)"
    return header_conflict(r) or rewrite_snippet_conflict(r)


# The cache sends these itself (identity bodies; override headers stripped unless keyed).
_CACHE_REQUEST = frozenset({"accept-encoding", *(h.lower() for h in UNKEYED_OVERRIDE_HEADERS)})


def header_conflict(r: Route) -> str | None:
    """A request header the route's auth or cache already writes cannot be set too: nginx
    would send both lines."""
    if r.headers is None:
        return None
    names = {n.lower(): n for n in r.headers.request.set}
    taken: dict[str, str] = {}
    if r.auth is not None:
        if r.auth.api_keys is not None:
            taken[r.auth.api_keys.header.lower()] = "auth.api_keys (the key stays at the gateway)"
        taken.update({f.lower(): "auth.forward_headers" for f in r.auth.forward_headers})
    if r.cache is not None:
        taken.update({n: "cache" for n in _CACHE_REQUEST})
    for low, name in names.items():
        if low in taken:
            return f"headers.request.set.{name} is written by {taken[low]} on this route"
    return None


# Directives of nginx's rewrite module (and NDK's set_by_lua, which runs inside it):
# `rewrite ... break` stops them, so after the route's rewrite they would never run.
_REWRITE_MODULE = frozenset(
    {"set", "if", "return", "rewrite", "break", "set_by_lua", "set_by_lua_block", "set_by_lua_file"}
)


def rewrite_snippet_conflict(r: Route) -> str | None:
    if r.rewrite is None or r.snippets is None:
        return None
    used = sorted({d["directive"] for d in r.snippets.parsed} & _REWRITE_MODULE)
    if not used:
        return None
    return (
        f"snippets with {', '.join(used)} cannot go with rewrite: the route's rewrite stops "
        "nginx's rewrite directives, so they would never run; put them in the host's snippets"
    )


_GRPC_WHY = {
    "websocket: true": "gRPC runs on HTTP/2 streams, not on an Upgrade",
    "streaming: true": "gRPC streams by itself",
    "cache": "gRPC answers end in trailers, which are not stored",
    "cors": "browsers speak gRPC-Web, which is another protocol",
    "methods": "every gRPC call is a POST",
    "strip_prefix": "the path is the gRPC service and method",
    "rewrite": "the path is the gRPC service and method",
}


def check_unique_paths(routes: tuple[Route, ...]) -> tuple[Route, ...]:
    seen: set[tuple[str, str]] = set()
    for route in routes:
        key = (route.match, route.path)
        if key in seen:
            raise ValueError(f"two routes have the same path {route.path!r}")
        seen.add(key)
    return routes


def long_read_default(route: Any, *levels: Any) -> Any:
    """A WebSocket or SSE route keeps `timeouts.read` of 1h unless it or its host sets one.

    Runs before the route inherits `defaults`: a read timeout meant for ordinary requests
    would cut an idle WebSocket after a minute."""
    if not isinstance(route, dict):
        return route
    if route.get("websocket") is not True and route.get("streaming") is not True:
        return route
    for level in (route, *levels):
        timeouts = level.get("timeouts") if isinstance(level, dict) else None
        if isinstance(timeouts, dict) and "read" in timeouts:
            return route
        if timeouts is not None and not isinstance(timeouts, dict):
            return route  # invalid: validation says so
    own = route.get("timeouts") or {}
    return {**route, "timeouts": {**own, "read": LONG_READ}}
