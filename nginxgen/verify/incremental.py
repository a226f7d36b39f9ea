"""Verify only what changed since the last good verify.

At 10,000 services crossplane needs seconds for the whole file, yet one registry event
changes one upstream block. `verify_rendered` checks the skeleton (everything but the
upstream and location blocks) and only the blocks it has not seen verified before, each
parsed on its own inside a minimal http/server wrapper. That is sound because every
block must parse as exactly one balanced block of its kind with exactly the planned
content, and the blocks are spliced between whole statements of the skeleton, so the
file parses to the skeleton's tree with those blocks inserted. `nginx -t` still runs
on the whole candidate.

A cold verify (many unseen blocks) parses every block instead, in the runs the file
holds them in (all upstreams, then all locations), each run inside one wrapper and
required to parse as exactly its planned blocks in order. That proves what one parse
of the whole file proves, and the runs can be cut at block boundaries and parsed on
several cores (util/forked.py).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from ..deploy.nginx_bin import Binary
from ..model.plan import Location, Plan, Upstream
from ..render.conf import Rendered
from ..util import forked
from ..util.heap import without_collector
from .findings import Finding, Verdict
from .nginx_check import nginx_test
from .parse import parse_text
from .round_trip import compare_location, compare_upstream, round_trip
from .route_http import args
from .surface import location_args

# Past this many unseen blocks, parsing every block in long runs is cheaper than many
# small parses.
FULL_PARSE_AT = 200
MAX_VERIFIED = 262_144

Piece = tuple[object, str]  # (planned Upstream or Location, its rendered text)


class VerifyCache:
    """The (planned block, its text) pairs a verify has passed: a BuildCache part."""

    def __init__(self, max_pieces: int = MAX_VERIFIED) -> None:
        self.max_pieces = max_pieces
        self._good: set[Piece] = set()

    def __contains__(self, piece: Piece) -> bool:
        return piece in self._good

    def remember(self, pieces: list[Piece]) -> None:
        if len(self._good) + len(pieces) > self.max_pieces:
            self._good.clear()
        self._good.update(pieces)


@without_collector
def verify_rendered(
    rendered: Rendered,
    plan: Plan,
    binary: Binary | None = None,
    *,
    cache: VerifyCache | None = None,
) -> Verdict:
    """Like `verify`, but re-parses only blocks `cache` has not seen pass (all of them
    without a cache)."""
    cache = cache if cache is not None else VerifyCache()
    pieces: list[Piece] = [*rendered.upstreams, *rendered.locations]
    unseen = [p for p in pieces if p not in cache]
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
        cache.remember(unseen)
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
                findings += compare_upstream(block, planned)
            elif isinstance(planned, Location):
                key = location_args(planned)
                if block["directive"] != "location" or args(block) != key:
                    break
                findings += compare_location(block, planned, metrics)
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
    return compare_upstream(inner[0], upstream)


def _verify_location_piece(text: str, loc: Location, metrics: bool) -> list[Finding]:
    errors, parsed = _parse_piece("http {\nserver {\n" + text + "}\n}\n", f"route {loc.path!r}")
    if errors:
        return errors
    servers = parsed[0].get("block", []) if len(parsed) == 1 else []
    inner = servers[0].get("block", []) if len(servers) == 1 else []
    key = location_args(loc)
    if len(inner) != 1 or inner[0]["directive"] != "location" or args(inner[0]) != key:
        return [Finding("round-trip", f"route {loc.path!r} is not one location block")]
    return compare_location(inner[0], loc, metrics)


def _parse_piece(text: str, what: str) -> tuple[list[Finding], list[Any]]:
    """(syntax findings, parsed top level) of one block in its wrapper."""
    payload = parse_text(text, strict=True)
    errors = [Finding("syntax", f"{what}: {_error(e)}", e.get("line")) for e in payload["errors"]]
    return errors, ([] if errors else payload["config"][0]["parsed"])


def _error(e: dict[str, Any]) -> str:
    return str(e["error"]).split(" in /")[0]
