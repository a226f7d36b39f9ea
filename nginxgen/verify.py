"""Prove rendered text is what the Plan says: crossplane parse, plan round-trip, nginx -t.

The round-trip is the injection guard: if any registry value had escaped its token, the
parsed tree would hold a directive, server or block the Plan does not, and we refuse.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from . import forked
from .gateway_verify import check_guard, split_status_server
from .heap import without_collector
from .nginx_bin import Binary, test_config
from .nginx_parse import parse_text
from .plan import Location, Plan, Server, Upstream
from .render import Rendered, lua_string, nginx_time
from .surface_verify import (
    compare_servers,
    compare_stream,
    location_args,
    snippet_findings,
    snippet_shape,
)


@dataclass(frozen=True)
class Finding:
    check: str  # "syntax", "round-trip", "nginx -t"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"[{self.check}] {where}{self.message}"


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...]
    nginx_tested: bool

    @property
    def ok(self) -> bool:
        return not self.findings


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
    {"server", "zone", "keepalive", "least_conn", "ip_hash", "hash", "random"}
)


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
    if upstream.zone:
        settings.append(["zone", upstream.name, upstream.zone])
    if upstream.balance:
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
        findings += _compare_upstream(block, planned[name])
    for name in planned.keys() - seen:
        findings.append(Finding("round-trip", f"planned upstream {name!r} is missing"))

    servers = [d for d in http.get("block", []) if d["directive"] == "server"]
    servers, findings_gw = split_status_server(servers, plan)
    findings += findings_gw
    findings += compare_servers(servers, plan, _compare_location)
    findings += compare_stream(parsed, plan, _compare_upstream)
    return findings


def _compare_upstream(block: dict[str, Any], upstream: Upstream) -> list[Finding]:
    findings = []
    got = [d["args"] for d in block.get("block", []) if d["directive"] == "server"]
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
    others = [[d["directive"], *d["args"]] for d in statements]
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


def expected_lua(loc: Location, metrics: bool = False) -> list[tuple[str, str]]:
    """The cache's Lua one-liners a location runs (the gateway's are checked in
    gateway_verify); with metrics on, the cache's log phase also counts the request."""
    if loc.cache is None or loc.upstream is None:
        return []
    call = 'require("nginxgen.cache").'
    log = f"{call}log()" + (' require("nginxgen.metrics").log()' if metrics else "")
    return [
        ("access_by_lua_block", f"{call}access({lua_string(loc.cache.id)})"),
        ("header_filter_by_lua_block", f"{call}header_filter()"),
        ("body_filter_by_lua_block", f"{call}body_filter()"),
        ("log_by_lua_block", log),
    ]


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


def _compare_location(block: dict[str, Any], loc: Location, metrics: bool) -> list[Finding]:
    """One route's block: proxies exactly where planned, runs exactly the planned Lua,
    and keeps every guard (auth, API key, rate and connection limits) the plan gave it."""
    statements = block.get("block", [])
    passes = [d["args"] for d in statements if d["directive"] in ("proxy_pass", "grpc_pass")]
    if loc.grpc:
        want = [[f"grpc://{loc.upstream}"]] if loc.upstream else []
    else:
        want = [[f"http://{loc.upstream}{'/' if loc.strip_prefix else ''}"]] if loc.upstream else []
    if passes != want:
        return [Finding("round-trip", f"route {loc.path!r} proxies to {passes}", block["line"])]
    return (
        _compare_lua(block, loc, metrics)
        + check_guard(block, loc)
        + _compare_request_headers(block, loc)
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
    return want


def _compare_request_headers(block: dict[str, Any], loc: Location) -> list[Finding]:
    """The Host the cache key holds is the one sent; what must not reach the upstream is
    cleared. nginx sends every line for a name, so each must appear exactly once."""
    sent: dict[str, list[str]] = {}
    header_directive = "grpc_set_header" if loc.grpc else "proxy_set_header"
    for d in block.get("block", []):
        if d["directive"] == header_directive and d["args"]:
            sent.setdefault(d["args"][0].lower(), []).append(" ".join(d["args"][1:]))
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


def nginx_test(text: str, binary: Binary) -> list[Finding]:
    """`nginx -t` on a temporary copy, so a bad config never touches the real path."""
    tmp = Path(tempfile.mkdtemp(prefix="nginxgen-test-"))
    try:
        conf = tmp / "nginx.conf"
        conf.write_text(text, encoding="utf-8")
        result = test_config(binary, conf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if result.ok:
        return []
    findings = []
    for line in result.output.splitlines():
        if not line.strip() or line.endswith("test failed"):
            continue
        at = re.search(re.escape(str(conf)) + r":(\d+)", line)
        message = line.replace(f" in {conf}:{at.group(1)}" if at else str(conf), "")
        message = re.sub(r"^nginx: \[(\w+)\] |^\S+ \S+ \[(\w+)\] \d+#\d+: ", "", message)
        findings.append(Finding("nginx -t", message, int(at.group(1)) if at else None))
    return findings or [Finding("nginx -t", "nginx -t failed without saying why")]


# --- incremental verification -------------------------------------------------------------
#
# At 10,000 services crossplane needs seconds for the whole file, yet one registry event
# changes one upstream block. `verify_rendered` checks the skeleton (everything but the
# upstream and location blocks) and only the blocks it has not seen verified before, each
# parsed on its own inside a minimal http/server wrapper. That is sound because every
# block must parse as exactly one balanced block of its kind with exactly the planned
# content, and the blocks are spliced between whole statements of the skeleton, so the
# file parses to the skeleton's tree with those blocks inserted. `nginx -t` still runs
# on the whole candidate.
#
# A cold verify (many unseen blocks) parses every block instead, in the runs the file
# holds them in (all upstreams, then all locations), each run inside one wrapper and
# required to parse as exactly its planned blocks in order. That proves what one parse
# of the whole file proves, and the runs can be cut at block boundaries and parsed on
# several cores (forked.py).

# Past this many unseen blocks, parsing every block in long runs is cheaper than many
# small parses.
FULL_PARSE_AT = 200
_VERIFIED: set[tuple[object, str]] = set()  # (planned block, its text) known to be good
_VERIFIED_MAX = 262_144

Piece = tuple[object, str]  # (planned Upstream or Location, its rendered text)


@without_collector
def verify_rendered(rendered: Rendered, plan: Plan, binary: Binary | None = None) -> Verdict:
    """Like `verify`, but re-parses only blocks that changed since the last good verify."""
    pieces: list[Piece] = [*rendered.upstreams, *rendered.locations]
    unseen = [p for p in pieces if p not in _VERIFIED]
    metrics = plan.gateway.metrics
    findings = _verify_skeleton(rendered.skeleton, plan)
    if len(unseen) > FULL_PARSE_AT:
        unseen = pieces
        runs: list[list[Piece]] = [list(rendered.upstreams), list(rendered.locations)]
        tasks = [partial(_verify_runs, part, metrics) for part in _split(runs)]
        for part_findings in forked.run_all(tasks):
            findings += part_findings
    else:
        for piece in unseen:
            findings += _verify_piece(piece, metrics)
    if len({u.name for u in plan.upstreams}) != len(plan.upstreams):
        findings.append(Finding("round-trip", "two upstreams have the same name"))
    tested = False
    if not findings and binary is not None:
        findings += nginx_test(rendered.text, binary)
        tested = True
    if not findings:
        _remember(unseen)
    return Verdict(tuple(findings), tested)


def _split(runs: list[list[Piece]]) -> list[list[list[Piece]]]:
    """Cut the runs at block boundaries into one share of about equal text per worker."""
    total = sum(len(t) for run in runs for _, t in run)
    target = total / forked.workers() + 1
    parts: list[list[list[Piece]]] = [[]]
    size = 0
    for run in runs:
        current: list[Piece] = []
        parts[-1].append(current)
        for piece in run:
            if size >= target:
                current = []
                parts.append([current])
                size = 0
            current.append(piece)
            size += len(piece[1])
    return [[run for run in part if run] for part in parts if any(part)]


def _verify_runs(runs: list[list[Piece]], metrics: bool) -> list[Finding]:
    findings: list[Finding] = []
    for run in runs:
        findings += _verify_run(run, metrics)
    return findings


def _verify_run(run: list[Piece], metrics: bool) -> list[Finding]:
    """Consecutive blocks of one kind, parsed together: exactly the planned blocks, in order.
    On any mismatch each block is checked alone, so the finding names the block."""
    upstreams = isinstance(run[0][0], Upstream)
    body = "".join([text + "\n" for _, text in run])
    wrapped = "http {\n" + body + "}\n" if upstreams else "http {\nserver {\n" + body + "}\n}\n"
    payload = parse_text(wrapped, strict=True)
    blocks: list[dict[str, Any]] | None = None
    if not payload["errors"]:
        parsed = payload["config"][0]["parsed"]
        only_http = len(parsed) == 1 and parsed[0]["directive"] == "http"
        outer = parsed[0].get("block", []) if only_http else []
        if upstreams:
            blocks = outer
        elif len(outer) == 1 and outer[0]["directive"] == "server":
            blocks = outer[0].get("block", [])
    findings: list[Finding] = []
    if blocks is not None and len(blocks) == len(run):
        for block, (planned, _) in zip(blocks, run, strict=True):
            if isinstance(planned, Upstream):
                if block["directive"] != "upstream" or block["args"] != [planned.name]:
                    break
                findings += _compare_upstream(block, planned)
            elif isinstance(planned, Location):
                key = location_args(planned)
                if block["directive"] != "location" or block["args"] != key:
                    break
                findings += _compare_location(block, planned, metrics)
        else:
            return findings
    findings = [f for piece in run for f in _verify_piece(piece, metrics)]
    return findings or [Finding("round-trip", f"{len(run)} blocks do not parse as planned")]


def _verify_piece(piece: Piece, metrics: bool) -> list[Finding]:
    planned, text = piece
    if isinstance(planned, Upstream):
        return _verify_upstream_piece(text, planned)
    if isinstance(planned, Location):
        return _verify_location_piece(text, planned, metrics)
    return [Finding("round-trip", f"unexpected block {type(planned).__name__}")]


def _remember(pieces: list[tuple[object, str]]) -> None:
    if len(_VERIFIED) + len(pieces) > _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED.update(pieces)


def _verify_skeleton(skeleton: str, plan: Plan) -> list[Finding]:
    """The skeleton holds no upstream and no route: only the catch-all and status server."""
    payload = parse_text(skeleton, strict=True)
    findings = [Finding("syntax", _error(e), e.get("line")) for e in payload["errors"]]
    if findings:
        return findings
    bare = replace(plan, upstreams=(), locations=())
    return round_trip(payload["config"][0]["parsed"], bare)


def _verify_upstream_piece(text: str, upstream: Upstream) -> list[Finding]:
    errors, parsed = _parse_piece("http {\n" + text + "}\n", f"upstream {upstream.name!r}")
    if errors:
        return errors
    inner = parsed[0].get("block", []) if len(parsed) == 1 else []
    if (
        len(inner) != 1
        or inner[0]["directive"] != "upstream"
        or inner[0]["args"] != [upstream.name]
    ):
        return [Finding("round-trip", f"upstream {upstream.name!r} is not one upstream block")]
    return _compare_upstream(inner[0], upstream)


def _verify_location_piece(text: str, loc: Location, metrics: bool) -> list[Finding]:
    errors, parsed = _parse_piece("http {\nserver {\n" + text + "}\n}\n", f"route {loc.path!r}")
    if errors:
        return errors
    servers = parsed[0].get("block", []) if len(parsed) == 1 else []
    inner = servers[0].get("block", []) if len(servers) == 1 else []
    key = location_args(loc)
    if len(inner) != 1 or inner[0]["directive"] != "location" or inner[0]["args"] != key:
        return [Finding("round-trip", f"route {loc.path!r} is not one location block")]
    return _compare_location(inner[0], loc, metrics)


def _parse_piece(text: str, what: str) -> tuple[list[Finding], list[Any]]:
    """(syntax findings, parsed top level) of one block in its wrapper."""
    payload = parse_text(text, strict=True)
    errors = [Finding("syntax", f"{what}: {_error(e)}", e.get("line")) for e in payload["errors"]]
    return errors, ([] if errors else payload["config"][0]["parsed"])


def _error(e: dict[str, Any]) -> str:
    return str(e["error"]).split(" in /")[0]
