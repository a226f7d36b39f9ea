"""Round-trip checks for the gateway policies: what the Plan guards is guarded in the text.

A route planned with auth or a rate limit that renders without it would be an open door
that still passes `nginx -t`; these checks make that a verification failure instead.
"""

from __future__ import annotations

from typing import Any

from ..model.names import (
    AUTH_PREFIX,
    FEED_PATH,
    FEED_STATUS_PATH,
    MIRROR_PREFIX,
    ROUTE_VAR,
    SPLIT_PATH,
    SPLIT_STATUS_PATH,
    STATUS_SERVER_NAME,
)
from ..model.plan import Location, Plan
from .findings import Finding

Block = dict[str, Any]


def is_gateway_location(args: list[str]) -> bool:
    """Named error locations and internal auth subrequest locations nginxgen adds."""
    if args and args[0].startswith("@nginxgen_"):
        return True
    return (
        len(args) == 2
        and args[0] == "="
        and (args[1].startswith(AUTH_PREFIX) or args[1].startswith(MIRROR_PREFIX))
    )


# What the loopback status server (templates/status_server.conf.j2) may contain.
_STATUS_LOCATIONS = {("=", "/nginxgen/generation"), ("=", "/nginx_status"), ("/",)}
_STATUS_DIRECTIVES = {"default_type", "return", "allow", "deny", "stub_status"}
_METRICS_CALL = 'require("nginxgen.metrics").serve()'
# nginx.endpoints dynamic: the feed's two locations and what each may run.
_FEED_CALLS = {
    ("=", FEED_PATH): 'require("nginxgen.endpoints").push()',
    ("=", FEED_STATUS_PATH): 'require("nginxgen.endpoints").status()',
}
_FEED_DIRECTIVES = {"allow", "deny", "client_max_body_size", "client_body_buffer_size"}
# services.NAME.split: the split's push and status, shaped like the feed's.
_SPLIT_CALLS = {
    ("=", SPLIT_PATH): 'require("nginxgen.split").push()',
    ("=", SPLIT_STATUS_PATH): 'require("nginxgen.split").status()',
}
_ROUTE_SET = [f"${ROUTE_VAR}", ""]


def split_status_server(servers: list[Block], plan: Plan) -> tuple[list[Block], list[Finding]]:
    """The public server(s) without the status server; findings if it is missing, more
    than one, or holds anything but the generation, stub_status and metrics answers."""
    status = [s for s in servers if _names(s) == [[STATUS_SERVER_NAME]]]
    rest = [s for s in servers if s not in status]
    listen = plan.gateway.status_listen
    if listen is None:
        return rest, [Finding("round-trip", "unplanned status server")] if status else []
    if len(status) != 1:
        return rest, [Finding("round-trip", f"expected 1 status server on {listen}")]
    findings = []
    if _directive_args(status[0], "listen") != [[listen]]:
        findings.append(Finding("round-trip", f"status server must listen on {listen} only"))
    allowed = _STATUS_LOCATIONS | ({("=", "/metrics")} if plan.gateway.metrics else set())
    if plan.gateway.dynamic:
        allowed |= set(_FEED_CALLS)
    if plan.gateway.split:
        allowed |= set(_SPLIT_CALLS)
    for d in status[0].get("block", []):
        if d["directive"] == "location":
            if tuple(d["args"]) not in allowed or not _harmless(d):
                findings.append(
                    Finding("round-trip", f"status server has unplanned location {d['args']}")
                )
        elif d["directive"] == "set" and plan.gateway.metrics and d["args"] == _ROUTE_SET:
            continue  # declares the metrics map's route variable (status_server.conf.j2)
        elif d["directive"] not in ("listen", "server_name", "access_log"):
            findings.append(
                Finding("round-trip", f"status server has unplanned {d['directive']!r}")
            )
    return rest, findings


def _harmless(location: Block) -> bool:
    args = tuple(location["args"])
    feed = _FEED_CALLS.get(args) or _SPLIT_CALLS.get(args)
    if feed is not None:
        return _feed_location(location, feed)
    for d in location.get("block", []):
        if d["directive"] == "content_by_lua_block":
            if location["args"] != ["=", "/metrics"] or d["args"][0].strip() != _METRICS_CALL:
                return False
        elif d["directive"] not in _STATUS_DIRECTIVES:
            return False
    return True


def _feed_location(location: Block, call: str) -> bool:
    """A feed location: loopback only (allow/deny, deny all last), the one handler."""
    statements = location.get("block", [])
    access = [d["args"] for d in statements if d["directive"] in ("allow", "deny")]
    handlers = [
        d["args"][0].strip() for d in statements if d["directive"] == "content_by_lua_block"
    ]
    others = [
        d
        for d in statements
        if d["directive"] not in _FEED_DIRECTIVES and d["directive"] != "content_by_lua_block"
    ]
    loopback = access == [["127.0.0.0/8"], ["::1"], ["all"]]
    return loopback and handlers == [call] and not others


def _names(server: Block) -> list[list[str]]:
    return _directive_args(server, "server_name")


def _directive_args(server: Block, name: str) -> list[list[str]]:
    return [d["args"] for d in server.get("block", []) if d["directive"] == name]


def check_guard(block: Block, loc: Location) -> list[Finding]:
    """A route planned with auth or limits keeps them in its rendered block."""
    guard = loc.guard
    if guard is None:
        return []
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
    if not missing:
        return []
    return [
        Finding(
            "round-trip",
            f"route {loc.path!r} lacks its planned {', '.join(missing)}",
            block["line"],
        )
    ]
