"""Spec keys that are validated but not rendered yet (issue 20 lands in steps).

A key the renderer would silently skip is worse than a refused one: the user would think
their gateway does TLS, or limits methods, when it does not. So `parse_spec` refuses a
spec that uses any of these, naming the key and its line. When render learns a feature,
its lines here go, together with the test in tests/test_spec_http.py that says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Spec
    from .routes import Route

Key = tuple[Any, ...]


def unrendered_keys(spec: Spec) -> list[tuple[Key, str]]:
    out: list[tuple[Key, str]] = []
    listeners = spec.nginx.listeners
    plain = listeners[0]
    if len(listeners) > 1 or plain.tls or plain.http2 or plain.proxy_protocol:
        out.append((("nginx", "listen"), "several listeners, tls, http2 or proxy_protocol"))
    if spec.nginx.real_ip_from:
        out.append((("nginx", "real_ip_from"), "real_ip_from"))
    if spec.nginx.resolver:
        out.append((("nginx", "resolver"), "resolver"))
    for key in ("hosts", "streams", "templates_dir"):
        if getattr(spec, key):
            out.append(((key,), key))
    if any(getattr(spec.snippets, c) is not None for c in ("http", "server", "stream")):
        out.append((("snippets",), "snippets"))
    for name, policy in spec.services.items():
        if policy.snippets is not None:
            out.append((("services", name, "snippets"), "snippets"))
    for i, route in enumerate(spec.routes):
        out += [(("routes", i, key), what) for key, what in _route_keys(route)]
    return out


def _route_keys(r: Route) -> list[tuple[str, str]]:
    used = [
        ("match", "match: regex", r.match == "regex"),
        ("methods", "methods", r.methods is not None),
        ("rewrite", "rewrite", r.rewrite is not None),
        ("headers", "headers", r.headers is not None),
        ("cors", "cors", r.cors is not None),
        ("websocket", "websocket: true", r.websocket),
        ("streaming", "streaming: true", r.streaming),
        ("protocol", "protocol: grpc", r.protocol != "http"),
        ("upstream_tls", "upstream_tls", r.upstream_tls is not None),
        ("snippets", "snippets", r.snippets is not None),
    ]
    return [(key, what) for key, what, on in used if on]
