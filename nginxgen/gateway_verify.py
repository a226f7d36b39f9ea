"""Round-trip checks for the gateway policies: what the Plan guards is guarded in the text.

A route planned with auth or a rate limit that renders without it would be an open door
that still passes `nginx -t`; these checks make that a verification failure instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .gateway import AUTH_PREFIX

if TYPE_CHECKING:
    from .plan import Plan
    from .verify import Finding

Block = dict[str, Any]


def is_gateway_location(args: list[str]) -> bool:
    """Named error locations and internal auth subrequest locations nginxgen adds."""
    if args and args[0].startswith("@nginxgen_"):
        return True
    return len(args) == 2 and args[0] == "=" and args[1].startswith(AUTH_PREFIX)


def split_status_server(servers: list[Block], plan: Plan) -> tuple[list[Block], list[Finding]]:
    """The public server(s) without the planned status server; a finding if it is missing."""
    from .verify import Finding

    listen = plan.gateway.status_listen
    if listen is None:
        return servers, []
    rest = [s for s in servers if _listens(s) != [[listen]]]
    if len(rest) == len(servers):
        return servers, [Finding("round-trip", f"status server on {listen} is missing")]
    return rest, []


def _listens(server: Block) -> list[list[str]]:
    return [d["args"] for d in server.get("block", []) if d["directive"] == "listen"]


def check_guards(locations: dict[tuple[str, ...], Block], plan: Plan) -> list[Finding]:
    from .verify import Finding

    findings = []
    for loc in plan.locations:
        guard = loc.guard
        block = locations.get(("=", loc.path) if loc.exact else (loc.path,))
        if guard is None or block is None:
            continue
        names = {d["directive"]: d["args"] for d in block.get("block", [])}
        missing = []
        if guard.auth_location and names.get("auth_request") != [guard.auth_location]:
            missing.append("auth_request")
        if guard.key_set and "set_by_lua_block" not in names:
            missing.append("API key check")
        if guard.limit_zone and "limit_req" not in names:
            missing.append("limit_req")
        if guard.limit_conn and "limit_conn" not in names:
            missing.append("limit_conn")
        if missing:
            findings.append(
                Finding(
                    "round-trip",
                    f"route {loc.path!r} lacks its planned {', '.join(missing)}",
                    block["line"],
                )
            )
    return findings
