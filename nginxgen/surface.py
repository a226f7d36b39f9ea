"""The HTTP surface and the streams as the Plan carries them: which server blocks exist,
where each listens, their certificates, the unknown-host and redirect servers, and the
stream {} block. Pure decisions from the Spec; templates only lay these values out.

Which servers listen where (docs/http-surface.md): a host with a certificate on every TLS
listener and every plain one without `redirect_to_https`; a host without one on every
plain listener; a redirect server for the certificate hosts' names on each redirect
listener; an unknown-host server (404, or a refused handshake and 421 under TLS) that is
the default wherever the default host is not. `default_server` is written only where an
address has more than one server, so a spec with one listener renders as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass

from .spec import Spec
from .spec.listen import Listener

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
    upstreams: tuple = ()  # tuple[Upstream, ...]: plan.Upstream, without keepalive
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


def _params(listener: Listener) -> tuple[str, ...]:
    out = []
    if listener.tls:
        out.append("ssl")
    if listener.http2:
        out.append("http2")
    if listener.proxy_protocol:
        out.append("proxy_protocol")
    return tuple(out)


def plan_surface(spec: Spec) -> Surface:
    """Servers, listeners, TLS and maps: what the spec alone decides about the surface."""
    listeners = spec.nginx.listeners
    plain = [lst for lst in listeners if not lst.tls]
    secure = [lst for lst in listeners if lst.tls]
    hosts = spec.virtual_hosts
    hsts: dict[str, HstsMap] = {}
    # (kind, index) per address, in the order the servers are written
    where: dict[str, list[tuple[str, int]]] = {}
    placed: list[tuple[int, list[Listener]]] = []
    for i, vh in enumerate(hosts):
        if vh.tls is not None:
            chosen = secure + [lst for lst in plain if not lst.redirect_to_https]
        else:
            chosen = list(plain)
        placed.append((i, chosen))
        for lst in chosen:
            where.setdefault(lst.address, []).append(("host", i))
    redirecting = [lst for lst in plain if lst.redirect_to_https]
    cert_names = tuple(n for vh in hosts if vh.tls for n in vh.server_names)
    if redirecting and cert_names:
        for lst in redirecting:
            where.setdefault(lst.address, []).append(("redirect", 0))
    has_default = bool(hosts) and hosts[0].default
    unknown_plain = [] if has_default else plain
    for lst in unknown_plain + secure:
        where.setdefault(lst.address, []).append(("unknown", 0))

    def default_here(lst: Listener, kind: str, index: int) -> bool:
        there = where.get(lst.address, [])
        if len(there) < 2:
            return False
        if lst.tls or not has_default:
            return kind == "unknown"
        return (kind, index) == ("host", 0)

    def listen(lst: Listener, kind: str, index: int = 0) -> Listen:
        extra = ("default_server",) if default_here(lst, kind, index) else ()
        return Listen(lst.address, _params(lst) + extra)

    servers = []
    server_snippet = spec.snippets.server.text if spec.snippets.server else None
    for i, chosen in placed:
        vh = hosts[i]
        if not chosen:
            continue  # the spec refuses this; a server without listen would take *:80
        tls = None
        if vh.tls is not None:
            var = None
            if vh.tls.hsts is not None:
                h = vh.tls.hsts
                value = hsts_value(h.max_age, h.include_subdomains, h.preload)
                if value not in hsts:
                    hsts[value] = HstsMap(f"nginxgen_hsts_{len(hsts)}", value)
                var = hsts[value].var
            tls = ServerTLS(vh.tls.cert, vh.tls.key, var, vh.tls.ocsp_stapling)
        own = vh.snippets.text if vh.snippets else None
        snippet = "\n".join(t for t in (server_snippet, own) if t) or None
        servers.append(
            HostServer(
                index=i,
                names=vh.server_names,
                listens=tuple(listen(lst, "host", i) for lst in chosen),
                tls=tls,
                catch_all=not any(r.path == "/" and r.match == "prefix" for r in vh.routes),
                grpc=any(r.protocol == "grpc" for r in vh.routes),
                snippet=snippet,
                key=vh.key,
            )
        )
    redirects: tuple[Redirect, ...] = ()
    if redirecting and cert_names:
        https_port = secure[0].port
        redirects = (
            Redirect(cert_names, tuple(listen(lst, "redirect") for lst in redirecting), https_port),
        )
    unknown = []
    if unknown_plain:
        unknown.append(UnknownHost(False, tuple(listen(lst, "unknown") for lst in unknown_plain)))
    if secure:
        unknown.append(UnknownHost(True, tuple(listen(lst, "unknown") for lst in secure)))
    return Surface(
        servers=tuple(servers),
        redirects=redirects,
        unknown=tuple(unknown),
        tls=bool(secure),
        hsts=tuple(hsts.values()),
        resolver=spec.nginx.resolver,
        real_ip_from=spec.nginx.real_ip_from,
        websocket=any(r.websocket for _, r in spec.all_routes()),
        http_snippet=spec.snippets.http.text if spec.snippets.http else None,
    )


def stream_servers(spec: Spec, live: set[str] | frozenset[str]) -> tuple[StreamServer, ...]:
    """One stream server per `streams:` entry; `live`: services with an upstream."""
    out = []
    for st in spec.streams:
        f = st.failover
        out.append(
            StreamServer(
                listen=st.listen,
                udp=st.protocol == "udp",
                service=st.service,
                upstream=st.service if st.service in live else None,
                connect_timeout=st.timeouts.connect,
                idle_timeout=st.timeouts.idle,
                failover=f.enabled,
                tries=f.tries,
                try_timeout=f.timeout,
                responses=st.responses,
                snippet=st.snippets.text if st.snippets else None,
            )
        )
    return tuple(out)
