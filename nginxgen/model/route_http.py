"""What a route does to HTTP on its way through, as the Plan carries it: the methods it
lets pass, its rewrite, its header changes, its CORS answers and its TLS to the upstream
(spec keys `methods`, `rewrite`, `headers`, `cors`, `upstream_tls`), and the http-level
maps those read. `plan.route_http` decides them; templates lay them out;
`verify.route_http` checks the text against them.
"""

from __future__ import annotations

from dataclasses import dataclass

# What nginxgen answers by itself for a CORS route: the upstream's own CORS headers are
# hidden so that a client never sees two opinions.
CORS_RESPONSE_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
)
PREFLIGHT_VAR = "nginxgen_preflight"  # 1 for OPTIONS with Access-Control-Request-Method
ALLOW_VAR = "nginxgen_allow"  # the Allow header the 405 answer sends
METHOD_NOT_ALLOWED = "@nginxgen_405"
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
# CORS preflight state per policy: not a preflight, one from an origin not listed, one
# from a listed origin.
NOT_PREFLIGHT, PREFLIGHT_DENIED, PREFLIGHT_ALLOWED = "0", "1", "2"


@dataclass(frozen=True)
class MethodsMap:
    """`map $request_method $VAR { default 0; GET 1; ... }`: one per distinct method set."""

    var: str
    methods: tuple[str, ...]

    @property
    def allow(self) -> str:
        return ", ".join(self.methods)


@dataclass(frozen=True)
class CorsMaps:
    """The maps of one CORS origin policy. `var` is the allowed origin or "" (nginx sends
    no header with an empty value); `exact` are listed origins, answered as written;
    `patterns` are the regexes of `scheme://*.domain` entries, answered with the client's
    Origin (which the regex confines to DNS-label characters); `any_origin` is `'*'`."""

    var: str
    exact: tuple[str, ...]
    patterns: tuple[str, ...]
    any_origin: bool
    preflight_var: str  # NOT_PREFLIGHT / PREFLIGHT_DENIED / PREFLIGHT_ALLOWED
    credentials_var: str | None  # "true" for a listed origin, else ""
    expose_var: str | None  # the exposed headers for a listed origin, else ""
    expose: str


@dataclass(frozen=True)
class RouteMaps:
    methods: tuple[MethodsMap, ...] = ()
    cors: tuple[CorsMaps, ...] = ()

    @property
    def preflight(self) -> bool:
        return bool(self.cors)


@dataclass(frozen=True)
class CorsAnswer:
    """One route's CORS answers: the preflight's static values, read from its maps."""

    maps: CorsMaps
    methods: str  # "GET, HEAD"
    headers: str  # "Authorization, Content-Type"
    max_age: int
    credentials: bool


@dataclass(frozen=True)
class UpstreamTLSPlan:
    verify: bool
    ca: str | None
    sni: str | None
    client_cert: str | None
    client_key: str | None


@dataclass(frozen=True)
class RouteHttp:
    """A route's HTTP changes. Names keep the spec's spelling; values are literal text
    the spec accepted (printable ASCII, no `$`), rendered through the quoting filter."""

    methods: MethodsMap | None = None
    rewrite: tuple[str, str] | None = None  # (from regex, to with $1..$9)
    request_set: tuple[tuple[str, str], ...] = ()  # without Host (request_host)
    request_remove: tuple[str, ...] = ()  # those the gateway does not clear already
    request_host: str | None = None  # headers.request.set.Host
    response_set: tuple[tuple[str, str], ...] = ()
    response_remove: tuple[str, ...] = ()
    cors: CorsAnswer | None = None
    upstream_tls: UpstreamTLSPlan | None = None

    @property
    def hidden(self) -> tuple[str, ...]:
        """Upstream response headers the client never sees (proxy_hide_header)."""
        names = [n for n, _ in self.response_set] + list(self.response_remove)
        if self.cors is not None:
            names += CORS_RESPONSE_HEADERS
        return tuple(dict.fromkeys(names))

    @property
    def adds_headers(self) -> bool:
        """The location has add_header lines of its own: nginx then drops the server's
        (X-Request-ID, HSTS), so the location repeats them."""
        return bool(self.response_set) or self.cors is not None
