"""The round trip of how a route answers "nobody to serve" without a Lua phase of its own
(Location.nobody_check "page"): the route names its service and sends nginx's 500 to the
server's named location, which answers the 503 on purpose (gRPC: UNAVAILABLE). A route
rendered without the pair still passes `nginx -t`, and would answer a bare 500 while its
service is down; these checks make that a verification failure instead."""

from __future__ import annotations

from typing import Any

from ..model.names import NOBODY_PAGE, SERVICE_VAR, SPLIT_VAR
from ..model.plan import Location
from ..model.surface import GRPC_UNAVAILABLE, HostServer
from .findings import Finding
from .route_http import args

Block = dict[str, Any]
Shape = list[Any]
UNAVAILABLE_CALL = 'require("nginxgen.balancer").unavailable()'


def expected_nobody(loc: Location) -> list[Shape]:
    """The route's statements for it, in order (templates/location.conf.j2)."""
    if loc.nobody_check != "page":
        return []
    if loc.grpc:
        return [["error_page", ["500", "502", "503", "504", "=", GRPC_UNAVAILABLE], []]]
    out: list[Shape] = [
        ["set", [f"${SERVICE_VAR}", loc.service], []],
        ["error_page", ["500", "=", NOBODY_PAGE], []],
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


def nobody_page_findings(
    server: Block, srv: HostServer, locations: list[Location]
) -> list[Finding]:
    """The server's named location: there exactly when the plan says so, only the call
    that answers (its headers are the server's); and the plan says so for every server
    with a route that sends its 500 there (`locations`: the server's, when verified
    with them)."""
    what = f"server {' '.join(srv.names)}"
    blocks = [
        d
        for d in server.get("block", [])
        if d["directive"] == "location" and d["args"] == [NOBODY_PAGE]
    ]
    if (
        any(loc.nobody_check == "page" and not loc.grpc for loc in locations)
        and not srv.nobody_page
    ):
        return [Finding("round-trip", f"{what}: a route needs {NOBODY_PAGE}, not planned")]
    if not srv.nobody_page:
        return [Finding("round-trip", f"{what}: unplanned {NOBODY_PAGE}")] if blocks else []
    body = [
        [d["directive"], [a.strip() for a in d["args"]]] for b in blocks for d in b.get("block", [])
    ]
    if len(blocks) != 1 or body != [["content_by_lua_block", [UNAVAILABLE_CALL]]]:
        return [Finding("round-trip", f"{what}: its {NOBODY_PAGE} is not as planned")]
    return []
