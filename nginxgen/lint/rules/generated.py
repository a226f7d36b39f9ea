"""nginxgen's own output: a file with nginxgen's header keeps the generator's invariants.

Checked without re-planning: the walk records the file's http and server blocks, its
locations (and, in upstreams.py and proxying.py, its upstreams and proxy_passes); the end
check compares them with what nginxgen writes.
"""

from __future__ import annotations

import re

from ...model.names import SPLIT_VAR, STATUS_SERVER_NAME

# What nginxgen writes inside an upstream: verify's list, so the two never drift apart.
from ...verify.round_trip import PLACEHOLDER_SERVER
from ...verify.round_trip import UPSTREAM_DIRECTIVES as GENERATED_UPSTREAM_DIRECTIVES
from ..findings import rule
from ..tree import Checks, LocationFact, Node, UpstreamFact, Walk
from .proxying import proxy_host

_GENERATED_SERVER = re.compile(r"^weight=\d+$|^max_fails=\d+$|^fail_timeout=\d+m?s$")
# services.NAME.split: Lua picks the version's upstream (`<service>--<version>`) and the
# route (or its mirror location) proxies to the variable it set (docs/split.md).
_SPLIT_TARGETS = (f"http://${SPLIT_VAR}", "http://$nginxgen_mirror_upstream$request_uri")
_VERSION_UPSTREAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*--[A-Za-z0-9][A-Za-z0-9_.-]*$")

NGINXGEN_ROUND_TRIP = rule(
    "NGX016",
    "nginxgen-round-trip",
    "error",
    "generated config differs from what nginxgen generates",
    """The file carries nginxgen's header (`# nginxgen: spec=...`), so it
    must keep the generator's invariants: one http block with at least one server
    block (one per virtual host, plus the redirect and unknown-host servers);
    upstreams hold only server/zone/keepalive/balancer directives, each server as
    `address weight= max_fails= fail_timeout= [backup]` (or, balanced by Lua, the one
    placeholder `server 0.0.0.1`); no upstream is defined twice or left unused (a split
    route's version upstreams, `<service>--<version>`, are used by the Lua that picks
    them); every location proxies to an upstream defined in the file, to the split's
    variable, or answers with `return`. A difference means a hand edit (overwritten at the
    next render) or a template change that needs review.""",
)


def count_http(node: Node, w: Walk) -> None:
    w.facts.http_blocks += 1


def count_server(node: Node, w: Walk) -> None:
    if "block" in node and w.parent == "http" and not _is_status_server(node):
        w.facts.server_blocks += 1


def _is_status_server(node: Node) -> bool:
    """The loopback status/metrics server nginxgen renders beside the public one."""
    return any(
        d["directive"] == "server_name" and d["args"] == [STATUS_SERVER_NAME]
        for d in node.get("block", [])
    )


def record_location(node: Node, w: Walk) -> None:
    if w.facts.generated is None:
        return
    proxies = returns = False
    for child in w.children(node):
        d = child["directive"]
        proxies = proxies or d in ("proxy_pass", "grpc_pass")
        if d == "grpc_pass" and child["args"]:
            scheme, sep, host = child["args"][0].partition("://")
            if sep and scheme in ("grpc", "grpcs") and "$" not in host:
                w.facts.grpc_upstreams.add(host.split("/", 1)[0])
        returns = returns or d in ("return", "stub_status", "content_by_lua_block")
    w.facts.locations.append(
        LocationFact(tuple(node["args"]), w.file, node["line"], proxies, returns, w.suppressed)
    )


def upstream_problems(up: UpstreamFact) -> list[tuple[str, int | None, str, frozenset[str]]]:
    """Directives nginxgen never writes in an upstream, and servers not in its shape."""
    problems: list[tuple[str, int | None, str, frozenset[str]]] = []
    for child in up.others:
        d = child["directive"]
        if d not in GENERATED_UPSTREAM_DIRECTIVES:
            message = f"upstream {up.name!r} has directive {d!r}"
            problems.append((up.file, child["line"], message, up.suppressed))
    dynamic = any(c["directive"] == "balancer_by_lua_block" for c in up.others)
    for s in up.servers:
        args = s["args"]
        if dynamic and args == PLACEHOLDER_SERVER:
            continue  # nginx.endpoints dynamic: the Lua balancer picks the peers
        rest = args[1:-1] if args and args[-1] == "backup" else args[1:]
        if len(rest) != 3 or not all(_GENERATED_SERVER.match(a) for a in rest):
            message = f"upstream {up.name!r} server {' '.join(args)}"
            problems.append((up.file, s["line"], message, up.suppressed))
    return problems


def nginxgen_round_trip(w: Walk) -> None:
    """The generator's invariants, checked without re-planning (see NGX016's explanation)."""
    facts = w.facts
    if facts.generated is None:
        return
    main = w.configs[0]["file"]
    problems: list[tuple[str, int | None, str, frozenset[str]]] = []
    for up in [*facts.upstreams.values(), *facts.duplicate_upstreams]:
        problems += upstream_problems(up)

    def problem(file: str, line: int | None, message: str, off: frozenset[str]) -> None:
        problems.append((file, line, message, off))

    if facts.http_blocks != 1 or facts.server_blocks < 1:
        blocks = f"{facts.http_blocks} http and {facts.server_blocks} server blocks"
        problem(main, None, f"{blocks}, expected 1 http block with servers", frozenset())
    for dup in facts.duplicate_upstreams:
        problem(dup.file, dup.line, f"upstream {dup.name!r} defined twice", dup.suppressed)
    used: set[str] = set()
    split = False
    for p in facts.proxy_passes:
        if p.target in _SPLIT_TARGETS:
            split = True
            continue
        host = proxy_host(p.target)
        if host is None or host not in facts.upstreams:
            problem(p.file, p.line, f"proxy_pass {p.target}: no such upstream", p.suppressed)
        else:
            used.add(host)
    used |= facts.grpc_upstreams & facts.upstreams.keys()
    for name, up in facts.upstreams.items():
        if name not in used and not (split and _VERSION_UPSTREAM.match(name)):
            problem(up.file, up.line, f"upstream {name!r} is not used", up.suppressed)
    for loc in facts.locations:
        if not (loc.proxies or loc.returns):
            where = " ".join(loc.args)
            problem(
                loc.file, loc.line, f"location {where} neither proxies nor returns", loc.suppressed
            )
    for file, line, message, suppressed in problems:
        w.hit(
            NGINXGEN_ROUND_TRIP.id,
            line,
            f"generated config: {message}",
            file=file,
            suppressed=suppressed,
        )


RULES = (NGINXGEN_ROUND_TRIP,)
CHECKS = Checks(
    on={"http": (count_http,), "server": (count_server,), "location": (record_location,)},
    at_end=(nginxgen_round_trip,),
)
