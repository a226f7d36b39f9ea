"""Spec keys that are validated but not rendered yet (issue 20 lands in steps).

A key the renderer would silently skip is worse than a refused one: the user would think
their gateway does TLS, or limits methods, when it does not. So `parse_spec` refuses a
spec that uses any of these, naming the key and its line. When render learns a feature,
its lines here go, together with the test in tests/test_spec_http.py that says so.
"""

from __future__ import annotations

from typing import Any

from .routes import Route

# spec.Spec: its module imports this one, so it is named here without an import.
Spec = Any

Key = tuple[Any, ...]


def unrendered_keys(spec: Spec) -> list[tuple[Key, str]]:
    out: list[tuple[Key, str]] = []
    for vh in spec.virtual_hosts:
        for i, route in enumerate(vh.routes):
            out += [((*vh.route_key(i), key), what) for key, what in _route_keys(route)]
    return out


def _route_keys(r: Route) -> list[tuple[str, str]]:
    # Every route key renders today (methods, rewrite, headers, cors and upstream_tls
    # learnt it with issue 20); a key added in steps lists itself here until it does.
    used: list[tuple[str, str, bool]] = []
    return [(key, what) for key, what, on in used if on]
