"""What the spec alone decides about the HTTP surface and the streams.

Which servers listen where (docs/http-surface.md): a host with a certificate on every TLS
listener and every plain one without `redirect_to_https`; a host without one on every
plain listener; a redirect server for the certificate hosts' names on each redirect
listener; an unknown-host server (404, or a refused handshake and 421 under TLS) that is
the default wherever the default host is not. `default_server` is written only where an
address has more than one server, so a spec with one listener renders as it always did.
"""

from __future__ import annotations

from ..model.surface import (
    HostServer,
    HstsMap,
    Listen,
    Redirect,
    ServerTLS,
    StreamServer,
    Surface,
    UnknownHost,
    hsts_value,
)
from ..spec import Spec
from ..spec.listen import Listener


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
                methods=any(r.methods is not None for r in vh.routes),
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
