"""The HTTP surface and the streams as the Plan carries them: which server blocks exist,
where each listens, their certificates, the unknown-host and redirect servers, and the
stream {} block, as plain frozen values. `plan.surface` decides them; templates only lay
them out; `verify.surface` checks the text against them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .route_http import RouteHttp, RouteMaps

# Mozilla's "intermediate" profile (ssl-config.mozilla.org, version 5.7) without its three
# DHE suites, which need an ssl_dhparam file and which nginx never offers without one.
# TLS 1.3 suites are OpenSSL's defaults, which ssl_ciphers does not set.
TLS_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
GRPC_UNAVAILABLE = "@nginxgen_grpc_unavailable"
# nginx.endpoints dynamic: where a gRPC route sends the 500s nginx makes; Lua answers
# UNAVAILABLE while the service has nobody to serve, INTERNAL for any other.
GRPC_500 = "@nginxgen_grpc_500"


@dataclass(frozen=True)
class Listen:
    """One `listen` line: the address and its parameters (ssl, http2, proxy_protocol,
    default_server), the same on every server of that address but default_server."""

    address: str
    params: tuple[str, ...] = ()

    @property
    def args(self) -> list[str]:
        return [self.address, *self.params]


@dataclass(frozen=True)
class ServerTLS:
    cert: str
    key: str
    hsts_var: str | None = None  # map $https → the header value; "" on plain HTTP
    ocsp_stapling: bool = False


@dataclass(frozen=True)
class RoutePage:
    """The 503 on purpose of one route that adds headers of its own (CORS, headers.response):
    a named location of the server, with the route's add_header lines, since the server's
    shared one (names.NOBODY_PAGE) answers with the server's headers only."""

    name: str  # names.NOBODY_PAGE + "_" + the route's number in the spec
    http: RouteHttp
    hsts_var: str | None = None


@dataclass(frozen=True)
class HostServer:
    """A virtual host's server block; its locations are the Plan's with `server == index`."""

    index: int
    names: tuple[str, ...]
    listens: tuple[Listen, ...]
    tls: ServerTLS | None
    catch_all: bool  # `location /` answering 404: no route covers '/'
    grpc: bool  # holds the named location gRPC routes answer "unavailable" from
    snippet: str | None  # snippets.server, then the host's own
    key: tuple[str | int, ...]  # where the host is in the spec: ("hosts", 2), () at top level
    methods: bool = False  # holds the named location that answers 405 (a route has methods)
    # holds names.NOBODY_PAGE, the 503 of its routes whose Location.nobody_check is "page"
    nobody_page: bool = False
    route_pages: tuple[RoutePage, ...] = ()  # the routes' own, for those that add headers
    grpc_500: bool = False  # holds GRPC_500: a gRPC route's nobody_check is "page"


@dataclass(frozen=True)
class Redirect:
    """Plain listeners with redirect_to_https: certificate hosts answer 308 there."""

    names: tuple[str, ...]
    listens: tuple[Listen, ...]
    https_port: int


@dataclass(frozen=True)
class UnknownHost:
    """Answers a Host no host claims: 404 on plain listeners, a refused handshake or 421
    on TLS ones. Never proxies."""

    tls: bool
    listens: tuple[Listen, ...]


@dataclass(frozen=True)
class HstsMap:
    var: str
    value: str


@dataclass(frozen=True)
class StreamServer:
    listen: str
    udp: bool
    service: str
    upstream: str | None  # None: nobody alive, connections close at once
    connect_timeout: float
    idle_timeout: float
    failover: bool
    tries: int
    try_timeout: float
    responses: int | None
    snippet: str | None


@dataclass(frozen=True)
class StreamBlock:
    upstreams: tuple = ()  # tuple[Upstream, ...]: model.plan.Upstream, without keepalive
    servers: tuple[StreamServer, ...] = ()
    snippet: str | None = None


@dataclass(frozen=True)
class Surface:
    servers: tuple[HostServer, ...] = ()
    redirects: tuple[Redirect, ...] = ()
    unknown: tuple[UnknownHost, ...] = ()
    tls: bool = False  # any TLS listener: the profile's settings at http level
    tls_ciphers: str = TLS_CIPHERS
    hsts: tuple[HstsMap, ...] = ()
    resolver: tuple[str, ...] = ()
    real_ip_from: tuple[str, ...] = ()
    websocket: bool = False  # the Upgrade → Connection map
    http_snippet: str | None = None
    stream: StreamBlock | None = None
    route_maps: RouteMaps = RouteMaps()  # methods and CORS maps (model/route_http.py)

    def hsts_var(self, host_index: int) -> str | None:
        srv = next((s for s in self.servers if s.index == host_index), None)
        return srv.tls.hsts_var if srv and srv.tls else None


def hsts_value(max_age: float, include_subdomains: bool, preload: bool) -> str:
    value = f"max-age={int(max_age)}"
    if include_subdomains:
        value += "; includeSubDomains"
    if preload:
        value += "; preload"
    return value
