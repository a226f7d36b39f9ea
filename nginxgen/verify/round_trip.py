"""Prove rendered text is what the Plan says: crossplane parse, plan round-trip, nginx -t.

The round-trip is the injection guard: if any registry value had escaped its token, the
parsed tree would hold a directive, server or block the Plan does not, and we refuse.
"""

from __future__ import annotations

from typing import Any

from ..deploy.nginx_bin import Binary
from ..model.names import SPLIT_VAR
from ..model.plan import Location, Plan, Server, Upstream
from ..render.filters import lua_string, nginx_time
from ..util.heap import without_collector
from .bff import bff_findings, bff_lua, expected_pass
from .findings import Finding, Verdict
from .gateway import check_guard, split_status_server
from .nginx_check import nginx_test
from .nobody import nobody_findings
from .parse import parse_text
from .route_http import (
    args,
    compare_route_http,
    compare_route_maps,
    request_header_changes,
    upstream_scheme,
)
from .surface import (
    compare_servers,
    compare_stream,
    snippet_findings,
    snippet_shape,
)


@without_collector
def verify(text: str, plan: Plan, binary: Binary | None = None) -> Verdict:
    """Parse `text`, compare it with `plan`, and run `nginx -t` when `binary` is given."""
    payload = parse_text(text, strict=True)
    findings = [
        Finding("syntax", e["error"].split(" in /")[0], e.get("line")) for e in payload["errors"]
    ]
    if not findings:
        findings += round_trip(payload["config"][0]["parsed"], plan)
    tested = False
    if not findings and binary is not None:
        findings += nginx_test(text, binary)
        tested = True
    return Verdict(tuple(findings), tested)


# Every directive nginxgen may write inside an upstream block (lint's NGX016 reads this).
UPSTREAM_DIRECTIVES = frozenset(
    {
        "server",
        "zone",
        "keepalive",
        "least_conn",
        "ip_hash",
        "hash",
        "random",
        "balancer_by_lua_block",
    }
)
# A dynamic upstream's one server: nginx wants one, the Lua balancer never uses it.
PLACEHOLDER_SERVER = ["0.0.0.1"]


def balancer_call(upstream: Upstream) -> str:
    """What a dynamic upstream's balancer_by_lua_block runs (templates/upstream.conf.j2)."""
    key = f", ngx.var.{upstream.hash_var}" if upstream.hash_var else ""
    return f'require("nginxgen.balancer").balance({lua_string(upstream.name)}{key})'


def available_call(loc: Location) -> str:
    """What a cached or part route's rewrite_by_lua_block runs: 503 while nobody serves
    (Location.nobody_check "lua"; the others answer through error_page, verify/nobody.py)."""
    if loc.split:
        return split_available_call(loc)
    grpc = ", true" if loc.grpc else ""
    return f'require("nginxgen.balancer").available({lua_string(loc.service)}{grpc})'


def expected_server_args(server: Server) -> list[str]:
    args = [
        server.address,
        f"weight={server.weight}",
        f"max_fails={server.max_fails}",
        f"fail_timeout={nginx_time(server.fail_timeout)}",
    ]
    if server.backup:
        args.append("backup")
    if server.down:
        args.append("down")
    return args


def expected_upstream_settings(upstream: Upstream) -> list[list[str]]:
    """The non-server directives of an upstream block, as [directive, *args], in order."""
    settings = []
    if upstream.dynamic:
        settings.append(["balancer_by_lua_block", balancer_call(upstream)])
    if upstream.zone:
        settings.append(["zone", upstream.name, upstream.zone])
    if upstream.balance and not upstream.dynamic:  # dynamic: the Lua balancer's method
        settings.append(list(upstream.balance))
    if upstream.keepalive:
        settings.append(["keepalive", str(upstream.keepalive)])
    return settings


def round_trip(parsed: list[dict[str, Any]], plan: Plan) -> list[Finding]:
    """Each upstream holds exactly the planned servers; each route proxies where planned."""
    http = _only(parsed, "http")
    if http is None:
        return [Finding("round-trip", "no single http block in the rendered config")]
    findings: list[Finding] = []
    blocks = [d for d in http.get("block", []) if d["directive"] == "upstream"]
    planned = {u.name: u for u in plan.upstreams}
    seen: set[str] = set()
    for block in blocks:
        name = block["args"][0] if block["args"] else ""
        if name not in planned or name in seen:
            findings.append(Finding("round-trip", f"unplanned upstream {name!r}", block["line"]))
            continue
        seen.add(name)
        findings += compare_upstream(block, planned[name])
    for name in planned.keys() - seen:
        findings.append(Finding("round-trip", f"planned upstream {name!r} is missing"))

    findings += compare_route_maps(http.get("block", []), plan)
    servers = [d for d in http.get("block", []) if d["directive"] == "server"]
    servers, findings_gw = split_status_server(servers, plan)
    findings += findings_gw
    findings += compare_servers(servers, plan, compare_location)
    findings += compare_stream(parsed, plan, compare_upstream)
    return findings


def compare_upstream(block: dict[str, Any], upstream: Upstream) -> list[Finding]:
    findings = []
    got = [d["args"] for d in block.get("block", []) if d["directive"] == "server"]
    if upstream.dynamic:
        want = [PLACEHOLDER_SERVER]  # the endpoints are data, checked by the feed's schema
    else:
        want = [expected_server_args(s) for s in upstream.servers]
    if got != want:
        findings.append(
            Finding(
                "round-trip",
                f"upstream {upstream.name!r} has servers {got}, planned {want}",
                block["line"],
            )
        )
    statements = block.get("block", [])
    if upstream.snippet is not None:
        findings += snippet_findings(
            statements, upstream.snippet, "upstream", f"upstream {upstream.name!r}", block["line"]
        )
        statements = statements[
            : len(statements) - len(snippet_shape(upstream.snippet, "upstream"))
        ]
    others = [[d["directive"], *(a.strip() for a in d["args"])] for d in statements]
    others = [d for d in others if d[0] != "server"]
    if others != expected_upstream_settings(upstream):
        findings.append(
            Finding(
                "round-trip",
                f"upstream {upstream.name!r} has unplanned directives {others}",
                block["line"],
            )
        )
    return findings


def split_available_call(loc: Location) -> str:
    """What a split route's rewrite_by_lua_block runs: 503 while no version serves."""
    return f'require("nginxgen.split").available({lua_string(loc.service)})'


def expected_lua(loc: Location, metrics: bool = False) -> list[tuple[str, str]]:
    """The cache's Lua one-liners a location runs (the gateway's are checked in
    verify/gateway.py); with metrics on, the cache's log phase also counts the request."""
    if loc.upstream is None and loc.aggregate is None:
        return bff_lua(loc)
    lua503 = []  # the 503 on purpose of a cached or part route, split or dynamic
    if loc.nobody_check == "lua":
        lua503 = [("rewrite_by_lua_block", available_call(loc))]
    if loc.cache is None:
        return lua503 + bff_lua(loc)
    call = 'require("nginxgen.cache").'
    log = f"{call}log()"
    balancer = 'require("nginxgen.balancer").log()'
    if loc.dynamic and metrics:
        log += f' require("nginxgen.metrics").log({balancer})'  # the peer it picked
    elif loc.dynamic:
        log += f" {balancer}"
    elif metrics:
        log += ' require("nginxgen.metrics").log()'
    return (
        lua503
        + [
            ("access_by_lua_block", f"{call}access({lua_string(loc.cache.id)})"),
            ("header_filter_by_lua_block", f"{call}header_filter()"),
            ("body_filter_by_lua_block", f"{call}body_filter()"),
            ("log_by_lua_block", log),
        ]
        + bff_lua(loc)
    )


def _compare_lua(block: dict[str, Any], loc: Location, metrics: bool) -> list[Finding]:
    got = [
        (d["directive"], " ".join(a.strip() for a in d["args"]))
        for d in block.get("block", [])
        if "_by_lua" in d["directive"] and d["directive"] != "set_by_lua_block"
    ]
    want = expected_lua(loc, metrics)
    if got == want:
        return []
    return [
        Finding("round-trip", f"route {loc.path!r} runs Lua {got}, planned {want}", block["line"])
    ]


def compare_location(block: dict[str, Any], loc: Location, metrics: bool) -> list[Finding]:
    """One route's block: proxies exactly where planned, runs exactly the planned Lua,
    and keeps every guard (auth, API key, rate and connection limits) the plan gave it."""
    statements = block.get("block", [])
    passes = [d["args"] for d in statements if d["directive"] in ("proxy_pass", "grpc_pass")]
    bff = expected_pass(loc)
    if bff is not None:
        want = bff
    else:
        strip = "/" if loc.strip_prefix and not loc.grpc else ""
        want = [[f"{upstream_scheme(loc)}{loc.upstream}{strip}"]] if loc.upstream else []
    if loc.split and loc.upstream:
        # The version's upstream, picked in Lua (plan/split.py): only its variable here.
        want = [[f"{upstream_scheme(loc)}${SPLIT_VAR}"]]
    if passes != want:
        return [Finding("round-trip", f"route {loc.path!r} proxies to {passes}", block["line"])]
    own = statements
    if loc.snippet is not None:
        own = statements[: len(statements) - len(snippet_shape(loc.snippet, "location"))]
    return (
        _compare_lua(block, loc, metrics)
        + nobody_findings(own, loc, block["line"])
        + bff_findings(block, loc)
        + check_guard(block, loc)
        + _compare_request_headers(block, loc)
        + compare_route_http(own, loc, block["line"])
        + snippet_findings(
            statements, loc.snippet, "location", f"route {loc.path!r}", block["line"]
        )
    )


def expected_request_headers(loc: Location) -> dict[str, str]:
    """Request headers a proxying route must set (lowercased name → value; "" clears)."""
    if loc.upstream is None:
        return {}
    host = loc.upstream_host or "$host"
    want = {h.lower(): "" for h in loc.cleared_headers}
    want.update({"host": host, "x-forwarded-host": host})
    want.update(request_header_changes(loc))  # headers.request: a set Host replaces it
    return want


def _compare_request_headers(block: dict[str, Any], loc: Location) -> list[Finding]:
    """The Host the cache key holds is the one sent; what must not reach the upstream is
    cleared. nginx sends every line for a name, so each must appear exactly once."""
    sent: dict[str, list[str]] = {}
    header_directive = "grpc_set_header" if loc.grpc else "proxy_set_header"
    for d in block.get("block", []):
        if d["directive"] == header_directive and d["args"]:
            sent.setdefault(d["args"][0].lower(), []).append(" ".join(args(d)[1:]))
    want = expected_request_headers(loc)
    wrong = [name for name, value in want.items() if sent.get(name) != [value]]
    if not wrong:
        return []
    return [
        Finding(
            "round-trip",
            f"route {loc.path!r} sends {', '.join(sorted(wrong))} other than planned",
            block["line"],
        )
    ]


def _only(parsed: list[dict[str, Any]], directive: str) -> dict[str, Any] | None:
    matches = [d for d in parsed if d["directive"] == directive]
    return matches[0] if len(matches) == 1 else None
