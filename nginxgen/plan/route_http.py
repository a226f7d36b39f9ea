"""What the spec alone decides about each route's HTTP changes (methods, rewrite,
headers, CORS, upstream TLS), and the http-level maps they read: one per distinct method
set and one set per distinct CORS origin policy, numbered in spec order so that the same
spec always renders the same names."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..model.route_http import (
    CorsAnswer,
    CorsMaps,
    MethodsMap,
    RouteHttp,
    RouteMaps,
    UpstreamTLSPlan,
)
from ..spec import Route, Spec
from ..spec.http import DEFAULT_CORS_METHODS, origin_regex


@dataclass(frozen=True)
class RouteHttpPlan:
    maps: RouteMaps
    routes: tuple[RouteHttp | None, ...]  # in spec.all_routes() order; None: no changes


def plan_route_http(spec: Spec) -> RouteHttpPlan:
    methods: dict[tuple[str, ...], MethodsMap] = {}
    cors: dict[tuple[object, ...], CorsMaps] = {}
    out: list[RouteHttp | None] = []
    for _, r in spec.all_routes():
        out.append(_route(r, methods, cors))
    return RouteHttpPlan(RouteMaps(tuple(methods.values()), tuple(cors.values())), tuple(out))


def _route(
    r: Route,
    methods: dict[tuple[str, ...], MethodsMap],
    cors: dict[tuple[object, ...], CorsMaps],
) -> RouteHttp | None:
    if not (r.methods or r.rewrite or r.headers or r.cors or r.upstream_tls):
        return None
    check = None
    allowed = r.allowed_methods
    if allowed is not None:
        check = methods.get(allowed)
        if check is None:
            check = methods[allowed] = MethodsMap(f"nginxgen_methods_{len(methods)}", allowed)
    request_host = None
    request_set: list[tuple[str, str]] = []
    request_remove: tuple[str, ...] = ()
    response_set: tuple[tuple[str, str], ...] = ()
    response_remove: tuple[str, ...] = ()
    if r.headers is not None:
        for name, value in r.headers.request.set.items():
            if name.lower() == "host":
                request_host = value
            else:
                request_set.append((name, value))
        request_remove = r.headers.request.remove
        response_set = tuple(r.headers.response.set.items())
        response_remove = r.headers.response.remove
    answer = None
    if r.cors is not None:
        c = r.cors
        expose = ", ".join(c.expose_headers)
        key = (c.origins, c.credentials, expose)
        maps = cors.get(key)
        if maps is None:
            n = len(cors)
            patterns = tuple(p for p in (origin_regex(o) for o in c.origins) if p is not None)
            maps = cors[key] = CorsMaps(
                var=f"nginxgen_cors_{n}",
                exact=tuple(o for o in c.origins if o != "*" and origin_regex(o) is None),
                patterns=patterns,
                any_origin="*" in c.origins,
                preflight_var=f"nginxgen_cors_{n}_preflight",
                credentials_var=f"nginxgen_cors_{n}_credentials" if c.credentials else None,
                expose_var=f"nginxgen_cors_{n}_expose" if expose else None,
                expose=expose,
            )
        cors_methods = c.methods or allowed or DEFAULT_CORS_METHODS
        answer = CorsAnswer(
            maps=maps,
            methods=", ".join(cors_methods),
            headers=", ".join(c.headers),
            max_age=int(c.max_age),
            credentials=c.credentials,
        )
    tls = None
    if r.upstream_tls is not None:
        u = r.upstream_tls
        tls = UpstreamTLSPlan(u.verify, u.ca, u.sni, u.client_cert, u.client_key)
    return RouteHttp(
        methods=check,
        rewrite=(r.rewrite.from_, r.rewrite.to) if r.rewrite else None,
        request_set=tuple(request_set),
        request_remove=request_remove,
        request_host=request_host,
        response_set=response_set,
        response_remove=response_remove,
        cors=answer,
        upstream_tls=tls,
    )


def with_cleared(
    http: RouteHttp | None, cleared: tuple[str, ...]
) -> tuple[RouteHttp | None, tuple[str, ...]]:
    """A header the route sets is no longer cleared, and one it removes that the gateway
    clears anyway is written once: nginx would send each line for a name."""
    if http is None:
        return None, cleared
    named = {n.lower() for n, _ in http.request_set}
    kept = tuple(h for h in cleared if h.lower() not in named)
    gone = {h.lower() for h in kept}
    remove = tuple(h for h in http.request_remove if h.lower() not in gone)
    return replace(http, request_remove=remove), kept
