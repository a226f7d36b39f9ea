"""The round trip for what routes do to HTTP: methods, rewrite, header changes, CORS
and TLS to the upstream. A route planned with a 405 check, an origin list or a verified
upstream that renders without it (or with one more origin, or another CA) still passes
`nginx -t`; these checks make it a verification failure instead.

Everything is compared as crossplane parsed it, so a header value or an origin that had
escaped its token would show up as a changed argument or an extra statement.
"""

from __future__ import annotations

import re
from typing import Any

from ..model.plan import Location, Plan
from ..model.route_http import (
    ALLOW_VAR,
    METHOD_NOT_ALLOWED,
    PREFLIGHT_VAR,
    PREFLIGHT_VARY,
    CorsMaps,
    RouteHttp,
)
from ..model.surface import HostServer
from .findings import Finding

Block = dict[str, Any]
Shape = list[Any]


def upstream_scheme(loc: Location) -> str:
    tls = loc.http is not None and loc.http.upstream_tls is not None
    if loc.grpc:
        return "grpcs://" if tls else "grpc://"
    return "https://" if tls else "http://"


def request_header_changes(loc: Location) -> dict[str, str]:
    """The request headers the spec's `headers.request` sets or removes (lowercased name
    → value; "" removes), Host included."""
    h = loc.http
    if h is None:
        return {}
    want = {name.lower(): value for name, value in h.request_set}
    want.update({name.lower(): "" for name in h.request_remove})
    if h.request_host is not None:
        want["host"] = h.request_host
    return want


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def nginx_arg(text: str) -> str:
    """An argument as nginx reads it: crossplane keeps the backslash escapes that nginx's
    own parser resolves (`\\\\` → `\\`, `\\"` → `"`); other backslashes stay."""
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def args(d: Block) -> list[str]:
    return [nginx_arg(a) for a in d["args"]]


def _shape(statements: list[Block]) -> list[Shape]:
    """Statements as [directive, args, inner shape], lines left out."""
    return [[nginx_arg(d["directive"]), args(d), _shape(d.get("block", []))] for d in statements]


def _hsts(loc: Location) -> list[Shape]:
    var = loc.hsts_var
    return [["add_header", ["Strict-Transport-Security", f"${var}", "always"], []]] if var else []


def _request_id() -> Shape:
    return ["add_header", ["X-Request-ID", "$nginxgen_request_id", "always"], []]


def expected_answers(loc: Location) -> list[Shape]:
    """The CORS preflight and 405 statements, in order (templates/route_answers.conf.j2)."""
    h = loc.http
    out: list[Shape] = []
    if h is None:
        return out
    if h.cors is not None:
        c = h.cors
        pre = f"${c.maps.preflight_var}"
        denied = [_request_id(), *_hsts(loc), ["return", ["204"], []]]
        allowed = [
            ["add_header", ["Access-Control-Allow-Origin", f"${c.maps.var}", "always"], []],
            ["add_header", ["Access-Control-Allow-Methods", c.methods, "always"], []],
            ["add_header", ["Access-Control-Allow-Headers", c.headers, "always"], []],
            ["add_header", ["Access-Control-Max-Age", str(c.max_age), "always"], []],
        ]
        if c.credentials:
            allowed.append(
                ["add_header", ["Access-Control-Allow-Credentials", "true", "always"], []]
            )
        allowed += [
            ["add_header", ["Vary", PREFLIGHT_VARY, "always"], []],
            _request_id(),
            *_hsts(loc),
            ["return", ["204"], []],
        ]
        out += [["if", [pre, "=", "1"], denied], ["if", [pre, "=", "2"], allowed]]
    if h.methods is not None:
        out += [
            ["set", [f"${ALLOW_VAR}", h.methods.allow], []],
            ["error_page", ["405", "=", METHOD_NOT_ALLOWED], []],
            ["if", [f"${h.methods.var}", "=", "0"], [["return", ["405"], []]]],
        ]
    return out


def expected_response_headers(loc: Location) -> list[Shape]:
    """The proxying location's own add_header lines (templates/route_proxy.conf.j2)."""
    return expected_http_headers(loc.http, loc.hsts_var)


def expected_http_headers(h: RouteHttp | None, hsts_var: str | None) -> list[Shape]:
    """A route's own add_header lines, wherever its answers are made: its location, its
    rendered 503, its own nobody page (templates/route_headers.conf.j2)."""
    if h is None or not h.adds_headers:
        return []
    out: list[Shape] = [["add_header", [n, v, "always"], []] for n, v in h.response_set]
    if h.cors is not None:
        c = h.cors.maps
        out.append(["add_header", ["Access-Control-Allow-Origin", f"${c.var}", "always"], []])
        if c.credentials_var:
            value = f"${c.credentials_var}"
            out.append(["add_header", ["Access-Control-Allow-Credentials", value, "always"], []])
        if c.expose_var:
            value = f"${c.expose_var}"
            out.append(["add_header", ["Access-Control-Expose-Headers", value, "always"], []])
        out.append(["add_header", ["Vary", "Origin", "always"], []])
    hsts = [["add_header", ["Strict-Transport-Security", f"${hsts_var}", "always"], []]]
    return [*out, _request_id(), *(hsts if hsts_var else [])]


def expected_tls(h: RouteHttp | None, prefix: str) -> list[list[str]]:
    """The `{proxy,grpc}_ssl_*` lines of a route, as [directive, *args], in order."""
    t = h.upstream_tls if h else None
    if t is None:
        return []
    out = [[f"{prefix}_ssl_protocols", "TLSv1.2", "TLSv1.3"]]
    if t.sni:
        out += [[f"{prefix}_ssl_server_name", "on"], [f"{prefix}_ssl_name", t.sni]]
    if t.verify and t.ca:
        out += [
            [f"{prefix}_ssl_verify", "on"],
            [f"{prefix}_ssl_trusted_certificate", t.ca],
            [f"{prefix}_ssl_verify_depth", "3"],
        ]
    if t.client_cert and t.client_key:
        out += [
            [f"{prefix}_ssl_certificate", t.client_cert],
            [f"{prefix}_ssl_certificate_key", t.client_key],
        ]
    return out


def compare_route_http(own: list[Block], loc: Location, line: int | None) -> list[Finding]:
    """`own`: the location's statements without the spec's snippet."""
    what = f"route {loc.path!r}"
    findings: list[Finding] = []
    shapes = _shape(own)
    answers = expected_answers(loc)
    early = [s for s in shapes if _is_answer(s)]
    if early != answers:
        findings.append(
            Finding("round-trip", f"{what}: its CORS or 405 answers are not planned", line)
        )
    h = loc.http
    prefix = "grpc" if loc.grpc else "proxy"
    rewrites = [args(d) for d in own if d["directive"] == "rewrite"]
    want_rewrite = [[*h.rewrite, "break"]] if h and h.rewrite and loc.upstream else []
    if loc.split and loc.strip_prefix and loc.upstream and not want_rewrite:
        # A split route proxies to a variable, so its prefix goes by a rewrite.
        want_rewrite = [[f"^{re.escape(loc.path)}(.*)$", "/$1", "break"]]
    if rewrites != want_rewrite:
        findings.append(
            Finding("round-trip", f"{what} rewrites {rewrites}, planned {want_rewrite}", line)
        )
    # Names the plan answers with carry exactly the planned values; a templates_dir
    # partial may add headers of its own (docs/http-surface.md shows one).
    planned = expected_response_headers(loc)
    names = {s[1][0].lower() for s in planned}
    added = [s for s in shapes if s[0] == "add_header" and s[1] and s[1][0].lower() in names]
    if loc.upstream is None:
        # The rendered 503 (nobody alive): the route's headers, as on its answers.
        if added != planned:
            findings.append(
                Finding("round-trip", f"{what}: its 503's response headers are not planned", line)
            )
        return findings
    hidden = {args(d)[0].lower() for d in own if d["directive"] == f"{prefix}_hide_header"}
    if not {n.lower() for n in (h.hidden if h else ())} <= hidden or added != planned:
        findings.append(
            Finding("round-trip", f"{what}: its response headers are not planned", line)
        )
    tls = [[d["directive"], *args(d)] for d in own if d["directive"].startswith(f"{prefix}_ssl_")]
    if tls != expected_tls(h, prefix):
        findings.append(Finding("round-trip", f"{what}: its upstream TLS is not planned", line))
    return findings


def _is_answer(shape: Shape) -> bool:
    """A statement of the preflight and 405 answers (nginxgen's other `if` is the API key
    check, on its own variable)."""
    directive, args = shape[0], shape[1]
    if directive == "if":
        return bool(args) and (
            args[0].startswith("$nginxgen_cors_") or args[0].startswith("$nginxgen_methods_")
        )
    if directive == "set":
        return bool(args) and args[0] == f"${ALLOW_VAR}"
    return directive == "error_page" and bool(args) and args[0] == "405"


# --- http level -------------------------------------------------------------------------


def expected_maps(plan: Plan) -> dict[str, tuple[str, list[list[str]]]]:
    """Each planned map: output variable → (source, [[key, value], ...] in order)."""
    maps = plan.surface.route_maps
    out: dict[str, tuple[str, list[list[str]]]] = {}
    for m in maps.methods:
        out[f"${m.var}"] = ("$request_method", [["default", "0"], *[[x, "1"] for x in m.methods]])
    if maps.preflight:
        source = "$request_method:$http_access_control_request_method"
        out[f"${PREFLIGHT_VAR}"] = (source, [["default", "0"], ["~^OPTIONS:.", "1"]])
    for c in maps.cors:
        out.update(_cors_maps(c))
    return out


def _cors_maps(c: CorsMaps) -> dict[str, tuple[str, list[list[str]]]]:
    var = f"${c.var}"
    origins = [["default", "*" if c.any_origin else ""]]
    origins += [[o, o] for o in c.exact]
    origins += [[f"~{p}", "$http_origin"] for p in c.patterns]
    out = {
        var: ("$http_origin", origins),
        f"${c.preflight_var}": (
            f"${PREFLIGHT_VAR}:{var}",
            [["default", "0"], ["~^1:$", "1"], ["~^1:.", "2"]],
        ),
    }
    if c.credentials_var:
        out[f"${c.credentials_var}"] = (var, [["default", "true"], ["", ""]])
    if c.expose_var:
        out[f"${c.expose_var}"] = (var, [["default", c.expose], ["", ""]])
    return out


def compare_route_maps(http: list[Block], plan: Plan) -> list[Finding]:
    """The methods and CORS maps hold exactly the planned entries: the origin list is
    who may read the answers."""
    want = expected_maps(plan)
    if not want:
        return []
    got: dict[str, list[tuple[str, list[list[str]]]]] = {}
    for d in http:
        if d["directive"] == "map" and len(d["args"]) == 2 and d["args"][1] in want:
            entries = [[nginx_arg(e["directive"]), *args(e)] for e in d.get("block", [])]
            got.setdefault(d["args"][1], []).append((d["args"][0], entries))
    findings = []
    for var, planned in want.items():
        if got.get(var) != [planned]:
            findings.append(Finding("round-trip", f"map {var} is not as planned"))
    return findings


def compare_method_answer(server: Block, srv: HostServer) -> list[Finding]:
    """The 405 answer of a server whose routes list methods: Allow from the route."""
    blocks = [
        d
        for d in server.get("block", [])
        if d["directive"] == "location" and d["args"] == [METHOD_NOT_ALLOWED]
    ]
    if not srv.methods:
        return [Finding("round-trip", f"unplanned {METHOD_NOT_ALLOWED}")] if blocks else []
    hsts = srv.tls.hsts_var if srv.tls else None
    want = [
        ["default_type", ["application/json"], []],
        ["add_header", ["Allow", f"${ALLOW_VAR}", "always"], []],
        _request_id(),
        *(
            [["add_header", ["Strict-Transport-Security", f"${hsts}", "always"], []]]
            if hsts
            else []
        ),
        ["return", ["405", '{"error":"method not allowed"}'], []],
    ]
    if len(blocks) != 1 or _shape(blocks[0].get("block", [])) != want:
        what = f"server {' '.join(srv.names)}"
        return [Finding("round-trip", f"{what}: its {METHOD_NOT_ALLOWED} is not as planned")]
    return []
