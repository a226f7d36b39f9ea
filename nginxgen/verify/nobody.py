"""The round trip of how a route answers "nobody to serve" without a Lua phase of its own
(Location.nobody_check "page"): the route names its service and sends nginx's 500 to a
named location of its server, which answers the 503 on purpose (gRPC: UNAVAILABLE) — the
server's shared one, or the route's own with the route's headers (CORS, headers.response).
A route rendered without the pair still passes `nginx -t`, and would answer a bare 500
while its service is down, or a 503 without its CORS headers, which a browser app cannot
read; these checks make that a verification failure instead."""

from __future__ import annotations

from typing import Any

from ..model.names import NOBODY_PAGE, SERVICE_VAR, SPLIT_VAR
from ..model.plan import Location
from ..model.surface import GRPC_500, HostServer, RoutePage
from .findings import Finding
from .route_http import args, expected_http_headers

Block = dict[str, Any]
Shape = list[Any]
UNAVAILABLE_CALL = 'require("nginxgen.balancer").unavailable()'
GRPC_ERROR_CALL = 'require("nginxgen.balancer").grpc_error()'


def expected_nobody(loc: Location) -> list[Shape]:
    """The route's statements for it, in order (templates/location.conf.j2)."""
    if loc.nobody_check != "page":
        return []
    out: list[Shape] = [
        ["set", [f"${SERVICE_VAR}", loc.service], []],
        ["error_page", ["500", "=", loc.nobody_page], []],
    ]
    if loc.split:
        out.append(["if", [f"${SPLIT_VAR}", "=", ""], [["return", ["500"], []]]])
    return out


def _is_nobody(d: Block) -> bool:
    a = args(d)
    directive = d["directive"]
    if directive == "set":
        return bool(a) and a[0] == f"${SERVICE_VAR}"
    if directive == "error_page":
        return "500" in a
    return directive == "if" and bool(a) and a[0] == f"${SPLIT_VAR}"


def _shape(d: Block) -> Shape:
    return [d["directive"], args(d), [_shape(c) for c in d.get("block", [])]]


def nobody_findings(statements: list[Block], loc: Location, line: int) -> list[Finding]:
    got = [_shape(d) for d in statements if _is_nobody(d)]
    want = expected_nobody(loc)
    if got == want:
        return []
    return [
        Finding(
            "round-trip",
            f"route {loc.path!r} answers 'nobody to serve' with {got}, planned {want}",
            line,
        )
    ]


def _content(d: Block) -> Shape:
    """A statement as [directive, args, inner], a Lua block's text stripped."""
    if d["directive"].endswith("_by_lua_block"):
        return [d["directive"], [a.strip() for a in d["args"]], []]
    return _shape(d)


def _call(call: str = UNAVAILABLE_CALL) -> Shape:
    return ["content_by_lua_block", [call], []]


def _route_page(page: RoutePage) -> list[Shape]:
    """A route's own page: its headers, then the one call that answers."""
    return [*expected_http_headers(page.http, page.hsts_var), _call()]


def nobody_page_findings(
    server: Block, srv: HostServer, locations: list[Location]
) -> list[Finding]:
    """The server's named locations for it: each there exactly when the plan says so, with
    only the call that answers — the shared one with the server's headers, a route's own
    with that route's — and the plan says so for every page a route of the server sends
    its 500 to (`locations`: the server's, when verified with them)."""
    what = f"server {' '.join(srv.names)}"
    blocks: dict[str, list[Block]] = {}
    for d in server.get("block", []):
        a = d["args"] if d["directive"] == "location" else []
        if len(a) == 1 and (a[0] in (NOBODY_PAGE, GRPC_500) or a[0].startswith(NOBODY_PAGE + "_")):
            blocks.setdefault(a[0], []).append(d)
    planned = {p.name: _route_page(p) for p in srv.route_pages}
    if srv.nobody_page:
        planned[NOBODY_PAGE] = [_call()]
    if srv.grpc_500:
        planned[GRPC_500] = [_call(GRPC_ERROR_CALL)]
    findings: list[Finding] = []
    for loc in locations:
        if loc.nobody_check == "page" and loc.nobody_page not in planned:
            findings.append(
                Finding(
                    "round-trip", f"{what}: route {loc.path!r} needs {loc.nobody_page}, not planned"
                )
            )
    for name in blocks.keys() - planned.keys():
        findings.append(Finding("round-trip", f"{what}: unplanned {name}"))
    for name, want in planned.items():
        got = blocks.get(name, [])
        body = [_content(d) for b in got for d in b.get("block", [])]
        if len(got) != 1 or body != want:
            findings.append(Finding("round-trip", f"{what}: its {name} is not as planned"))
    return findings
