"""The round trip for the HTTP surface and the streams: every server block is the one
planned (where it listens, its names, its certificate, its locations and snippet), the
redirect and unknown-host servers hold only their answer, and the stream block proxies
exactly the planned upstreams. Snippets are found again, statement for statement, where
they were placed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..model.plan import Location, Plan, Upstream
from ..model.surface import HostServer, Redirect, UnknownHost
from ..spec.snippets import parse_snippet, statement_shape
from .findings import Finding
from .gateway import is_gateway_location
from .nobody import nobody_page_findings
from .route_http import args, compare_method_answer

Block = dict[str, Any]
# round_trip's comparisons, passed in: it imports this module.
CompareLocation = Callable[[Block, Location, bool], list[Finding]]
CompareUpstream = Callable[[Block, Upstream], list[Finding]]

STREAM_ZONE_SUFFIX = "@stream"
_REDIRECT_DIRECTIVES = {"listen", "server_name", "return"}
_UNKNOWN_DIRECTIVES = {"listen", "server_name", "ssl_reject_handshake", "default_type", "return"}


def location_args(loc: Location) -> list[str]:
    if loc.regex:
        return ["~", loc.path]
    return ["=", loc.path] if loc.exact else [loc.path]


def snippet_shape(text: str, context: str) -> tuple[Any, ...]:
    return tuple(statement_shape(parse_snippet(text, context)))


def snippet_findings(
    statements: list[Block], text: str | None, context: str, what: str, line: int | None
) -> list[Finding]:
    """A snippet is the last statements of its block, exactly as the spec parsed them."""
    if text is None:
        return []
    want = snippet_shape(text, context)
    got = tuple(statement_shape(statements[-len(want) :])) if want else ()
    if got == want:
        return []
    return [Finding("round-trip", f"{what}: its snippet is not the spec's", line)]


def _args(block: Block, directive: str) -> list[list[str]]:
    return [d["args"] for d in block.get("block", []) if d["directive"] == directive]


def compare_servers(
    servers: list[Block], plan: Plan, compare_location: CompareLocation
) -> list[Finding]:
    """The public servers: the hosts' in plan order, then the redirect and unknown ones."""
    surface = plan.surface
    fixed: list[Redirect | UnknownHost] = [*surface.redirects, *surface.unknown]
    want = len(surface.servers) + len(fixed)
    if len(servers) != want:
        return [Finding("round-trip", f"expected {want} server blocks, found {len(servers)}")]
    findings: list[Finding] = []
    by_server: dict[int, list[Location]] = {}
    for loc in plan.locations:
        by_server.setdefault(loc.server, []).append(loc)
    hosts = servers[: len(surface.servers)]
    for block, srv in zip(hosts, surface.servers, strict=True):
        findings += _compare_host(block, srv, by_server.get(srv.index, []), plan, compare_location)
    for block, other in zip(servers[len(surface.servers) :], fixed, strict=True):
        findings += _compare_fixed(block, other)
    return findings


def _compare_listen(block: Block, listens: tuple[Any, ...], what: str) -> list[Finding]:
    want = [lst.args for lst in listens]
    got = _args(block, "listen")
    if got != want:
        return [Finding("round-trip", f"{what} listens on {got}, planned {want}", block["line"])]
    return []


def _compare_host(
    block: Block,
    srv: HostServer,
    locations: list[Location],
    plan: Plan,
    compare_location: CompareLocation,
) -> list[Finding]:
    what = f"server {' '.join(srv.names)}"
    findings = _compare_listen(block, srv.listens, what)
    if _args(block, "server_name") != [list(srv.names)]:
        findings.append(Finding("round-trip", f"{what} has other names", block["line"]))
    cert = [[srv.tls.cert]] if srv.tls else []
    if _args(block, "ssl_certificate") != cert:
        findings.append(Finding("round-trip", f"{what} has another certificate", block["line"]))
    found = {
        tuple(args(d)): d  # as nginx reads them: a regex's `\\` is one backslash
        for d in block.get("block", [])
        if d["directive"] == "location" and not is_gateway_location(d["args"])
    }
    for loc in locations:
        loc_block = found.get(tuple(location_args(loc)))
        if loc_block is None:
            findings.append(Finding("round-trip", f"route {loc.path!r} is missing"))
            continue
        findings += compare_location(loc_block, loc, plan.gateway.metrics)
    expected = len(locations) + (1 if srv.catch_all else 0)
    if len(found) != expected:
        findings.append(
            Finding("round-trip", f"{what}: expected {expected} locations, found {len(found)}")
        )
    findings += compare_method_answer(block, srv)
    findings += nobody_page_findings(block, srv, locations)
    findings += snippet_findings(block.get("block", []), srv.snippet, "server", what, block["line"])
    return findings


def _compare_fixed(block: Block, srv: Redirect | UnknownHost) -> list[Finding]:
    """A redirect or unknown-host server answers by itself and proxies nothing."""
    what = "the redirect server" if isinstance(srv, Redirect) else "the unknown-host server"
    findings = _compare_listen(block, srv.listens, what)
    allowed = _REDIRECT_DIRECTIVES if isinstance(srv, Redirect) else _UNKNOWN_DIRECTIVES
    names = [list(srv.names)] if isinstance(srv, Redirect) else [[""]]
    others = {d["directive"] for d in block.get("block", [])} - allowed
    if others or _args(block, "server_name") != names:
        findings.append(Finding("round-trip", f"{what} holds more than planned", block["line"]))
    return findings


def compare_stream(
    parsed: list[Block], plan: Plan, compare_upstream: CompareUpstream
) -> list[Finding]:
    """The stream block: its upstreams hold the planned servers, each server proxies to
    the planned upstream (or closes at once), listening where the spec says."""
    blocks = [d for d in parsed if d["directive"] == "stream"]
    stream = plan.surface.stream
    if stream is None:
        return [Finding("round-trip", "unplanned stream block")] if blocks else []
    if len(blocks) != 1:
        return [Finding("round-trip", f"expected 1 stream block, found {len(blocks)}")]
    inner = blocks[0].get("block", [])
    findings: list[Finding] = []
    ups = [d for d in inner if d["directive"] == "upstream"]
    planned = {u.name: u for u in stream.upstreams}
    if sorted(u["args"][0] for u in ups if u["args"]) != sorted(planned):
        findings.append(Finding("round-trip", "stream upstreams other than planned"))
    for block in ups:
        up = planned.get(block["args"][0]) if block["args"] else None
        if up is not None:
            # Its zone is NAME@stream: nginx's http and stream zones share one namespace.
            findings += compare_upstream(block, _as_stream_zone(up))
    servers = [d for d in inner if d["directive"] == "server"]
    if len(servers) != len(stream.servers):
        findings.append(Finding("round-trip", "stream servers other than planned"))
        return findings
    for block, st in zip(servers, stream.servers, strict=True):
        listen = [[st.listen, "udp"]] if st.udp else [[st.listen]]
        passes = [[st.upstream]] if st.upstream else []
        if _args(block, "listen") != listen or _args(block, "proxy_pass") != passes:
            findings.append(
                Finding("round-trip", f"stream {st.listen} is not as planned", block["line"])
            )
        findings += snippet_findings(
            block.get("block", []), st.snippet, "stream_server", f"stream {st.listen}", None
        )
    return findings


def _as_stream_zone(up: Upstream) -> Upstream:
    return replace(up, name=f"{up.name}{STREAM_ZONE_SUFFIX}") if up.zone else up
