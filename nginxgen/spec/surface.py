"""Checks across the HTTP surface: listeners, hosts, routes and streams that each make
sense alone but cannot all be true at once. Each problem names the key it is about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .fields import dotted_key, keyed
from .hosts import VirtualHost, name_owner
from .streams import stream_balance_problem

# spec.Spec: its module imports this one, so it is named here without an import.
Spec = Any

__all__ = ["check_templates_dir", "keyed", "surface_problem"]

Key = tuple[Any, ...]


def _host_label(vh: VirtualHost) -> str:
    return "the top-level routes" if vh.default else dotted_key(vh.key)


def surface_problem(spec: Spec) -> tuple[Key, str] | None:
    checks = (_names, _tls, _grpc_listeners, _grpc_split, _upstream_agreement, _streams)
    for check in checks:
        problem = check(spec)
        if problem:
            return problem
    return None


def _names(spec: Spec) -> tuple[Key, str] | None:
    owners: dict[str, str] = {}
    for vh in spec.virtual_hosts:
        for j, name in enumerate(vh.server_names):
            if vh.default and name == "_":
                continue  # matches nothing; the default host answers unknown names anyway
            key = ("nginx", "server_name") if vh.default else (*vh.key, "server_names", j)
            try:
                name_owner(owners, name, _host_label(vh))
            except ValueError as exc:
                return key, str(exc)
    return None


def _tls(spec: Spec) -> tuple[Key, str] | None:
    listeners = spec.nginx.listeners
    tls_listeners = [i for i, lst in enumerate(listeners) if lst.tls]
    with_cert = [vh for vh in spec.virtual_hosts if vh.tls is not None]
    if tls_listeners and not with_cert:
        i = tls_listeners[0]
        return ("nginx", "listen", i), (
            f"listener {listeners[i].address} has tls: true but no host has a certificate "
            "(hosts: [{server_names: [...], tls: {cert: ..., key: ...}, routes: [...]}])"
        )
    if with_cert and not tls_listeners:
        return (*with_cert[0].key, "tls"), (
            "no listener has tls: true, so this certificate would never be used "
            "(nginx.listen: [..., {port: 443, tls: true}])"
        )
    for vh in with_cert:
        assert vh.tls is not None
        if vh.tls.ocsp_stapling and not spec.nginx.resolver:
            return (*vh.key, "tls", "ocsp_stapling"), (
                "ocsp_stapling needs nginx.resolver: nginx looks up the OCSP responder itself"
            )
    return None


def _grpc_listeners(spec: Spec) -> tuple[Key, str] | None:
    for vh in spec.virtual_hosts:
        serving = [
            lst
            for lst in spec.nginx.listeners
            if (vh.tls is not None or not lst.tls)
            and not (lst.redirect_to_https and vh.tls is not None)
        ]
        for i, r in enumerate(vh.routes):
            if r.protocol == "grpc" and not any(lst.http2 for lst in serving):
                return (*vh.route_key(i), "protocol"), (
                    "protocol: grpc needs HTTP/2 from clients, and no listener that serves "
                    "this host has http2: true"
                )
    return None


def _grpc_split(spec: Spec) -> tuple[Key, str] | None:
    """A split service has an upstream per version and none of its own, and the version
    is chosen per HTTP request in Lua: a gRPC route has nothing it could proxy to. With
    the status listener off the split is ignored (a note), and the route is fine."""
    if spec.nginx.status_listen == "off":
        return None
    for vh in spec.virtual_hosts:
        for i, r in enumerate(vh.routes):
            if r.protocol == "grpc" and r.service and spec.service_policy(r.service).split:
                return (*vh.route_key(i), "protocol"), (
                    f"protocol: grpc cannot go to service {r.service!r}, which has a split "
                    f"(services.{r.service}.split): gRPC routes are not split; route the "
                    "gRPC calls to a service without one"
                )
    return None


def _upstream_agreement(spec: Spec) -> tuple[Key, str] | None:
    """Routes to one service share its upstream and its kept-alive connections: a
    connection opened for gRPC or TLS must not be handed to plain HTTP/1.1."""
    first: dict[str, tuple[Key, Any]] = {}
    for vh in spec.virtual_hosts:
        for i, r in enumerate(vh.routes):
            # An aggregate's parts are plain HTTP/1.1 requests to each part's service.
            how = (r.protocol, r.upstream_tls) if r.aggregate is None else ("http", None)
            key = vh.route_key(i)
            for service in r.services:
                if service not in first:
                    first[service] = (key, how)
                elif first[service][1] != how:
                    other = dotted_key(first[service][0])
                    return key, (
                        f"routes to service {service!r} must agree on protocol and "
                        f"upstream_tls (they share its connections); this one differs from "
                        f"{other}"
                    )
    return None


def _streams(spec: Spec) -> tuple[Key, str] | None:
    taken: list[tuple[str | None, int, str, str]] = []  # host, port, protocol, owner
    for i, lst in enumerate(spec.nginx.listeners):
        taken.append((lst.host, lst.port, "tcp", f"nginx.listen[{i}]"))
    if spec.nginx.status_listen != "off":
        host, port = spec.nginx.status_listen.rsplit(":", 1)
        taken.append((host, int(port), "tcp", "nginx.status_listen"))
    for i, st in enumerate(spec.streams):
        key = ("streams", i, "listen")
        for at, number, protocol, owner in taken:
            same_host = at is None or st.host is None or at == st.host
            if number == st.port and same_host and protocol == st.protocol:
                return key, f"{st.listen}/{st.protocol} is already taken by {owner}"
        taken.append((st.host, st.port, st.protocol, f"streams[{i}]"))
        problem = stream_balance_problem(spec.service_policy(st.service).balance)
        if problem:
            return ("streams", i, "service"), f"service {st.service!r}: {problem}"
    return None


def check_templates_dir(path: str) -> str:
    """An existing directory whose templates each replace one of nginxgen's by name."""
    from ..util.resources import resource_dir

    where = Path(path)
    if not where.is_dir():
        raise ValueError(f"not a directory: {path}")
    known = {p.name for p in resource_dir("templates").glob("*.j2")}
    unknown = sorted(p.name for p in where.glob("*.j2") if p.name not in known)
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} would replace no template of nginxgen's "
            f"(they are: {', '.join(sorted(known))})"
        )
    return path
