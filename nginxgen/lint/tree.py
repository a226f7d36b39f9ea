"""One pass over a crossplane payload: includes inlined, scopes inherited, suppressions seen.

Rules never walk the tree themselves. The walk calls the checks each rule topic gives for
a directive name (`Checks.on`), keeps the proxy settings each level inherits (`Scope`),
records what later checks need to know about the whole file (`Facts`), and files every
hit with the inline suppressions in force where it was found. That keeps a lint at one
traversal, which is what makes a 10,000-upstream config lint in about the time
crossplane parses it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from crossplane.analyzer import DIRECTIVES

from .findings import rule
from .parse import SYNTAX

Node = dict[str, Any]
Check = Callable[[Node, "Walk"], None]
EndCheck = Callable[["Walk"], None]
Marker = Callable[[Node], "str | None"]
# Including the same files over and over (each including the next one twice, 30 deep)
# expands without bound; past this many directives the walk stops with a finding.
MAX_WALKED = 5_000_000

# Blocks whose children are data (map keys, MIME types), not directives.
DATA_BLOCKS = {"map", "geo", "types", "split_clients", "charset_map", "match"}
# Blocks that open a new level of http configuration (inherit from the level above).
SCOPE_BLOCKS = {"http", "server", "location", "if", "limit_except"}
TIMEOUTS = ("proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout")

_SUPPRESS = re.compile(r"^\s*nginxgen:\s*disable=([A-Za-z0-9_/,.-]*)\s*(.*?)\s*$")
# `catalog=HASH` was written by nginxgen 0.1 development builds; still recognised.
_HEADER = re.compile(r"^\s*nginxgen:\s*spec=(.*?)(?:\s+catalog=([0-9a-fA-F]*))?\s*$")
NONE: frozenset[str] = frozenset()

# The walk itself is this rule's check (see Walk._level).
UNKNOWN_DIRECTIVE = rule(
    "NGX018",
    "unknown-directive",
    "warning",
    "unknown directive",
    """Neither nginx's core modules nor the Lua/NDK modules know this directive: a
    typo, or a third-party module. `nginx -t` fails on it unless the module is
    loaded. Run with --nginx-test against your build to be sure.""",
)


@dataclass(frozen=True)
class Checks:
    """What one rule topic asks of the walk: checks per directive name, checks run once
    the whole file has been walked, and block markers (a name for blocks whose contents a
    check treats differently; see Walk.marked)."""

    on: Mapping[str, tuple[Check, ...]] = field(default_factory=lambda: MappingProxyType({}))
    at_end: tuple[EndCheck, ...] = ()
    markers: tuple[Marker, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", MappingProxyType(dict(self.on)))

    @staticmethod
    def merge(parts: Iterable[Checks]) -> Checks:
        """One Checks for all topics, in topic order."""
        on: dict[str, tuple[Check, ...]] = {}
        at_end: tuple[EndCheck, ...] = ()
        markers: tuple[Marker, ...] = ()
        for part in parts:
            for directive, checks in part.on.items():
                on[directive] = on.get(directive, ()) + checks
            at_end += part.at_end
            markers += part.markers
        return Checks(MappingProxyType(on), at_end, markers)


@dataclass(frozen=True)
class Scope:
    """Proxy settings in force at one level of http configuration.

    nginx inherits `proxy_set_header` as a whole list, and only when a level sets none of
    its own; everything else here inherits value by value.
    """

    in_http: bool = False
    http_version: str | None = None
    headers: tuple[tuple[str, str], ...] | None = None  # (lowercased name, value)
    timeouts: frozenset[str] = NONE

    def enter(self, kind: str, children: list[Node]) -> Scope:
        version, timeouts = self.http_version, set(self.timeouts)
        headers: tuple[tuple[str, str], ...] | None = None
        for child in children:
            d = child["directive"]
            if d == "proxy_http_version" and child["args"]:
                version = child["args"][0]
            elif d == "proxy_set_header" and len(child["args"]) >= 2:
                headers = (headers or ()) + ((child["args"][0].lower(), child["args"][1]),)
            elif d in TIMEOUTS:
                timeouts.add(d)
        return Scope(
            in_http=self.in_http or kind == "http",
            http_version=version,
            headers=headers if headers is not None else self.headers,
            timeouts=frozenset(timeouts),
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers or ():
            if key == name:
                return value
        return None


@dataclass
class UpstreamFact:
    name: str
    file: str
    line: int
    keepalive: bool
    primaries: int
    suppressed: frozenset[str]
    # In a generated file only: its server lines and other directives, checked at the end.
    servers: tuple[Node, ...] = ()
    others: tuple[Node, ...] = ()


@dataclass
class ProxyPassFact:
    target: str
    file: str
    line: int
    scope: Scope
    suppressed: frozenset[str]


@dataclass
class LocationFact:
    args: tuple[str, ...]
    file: str
    line: int
    proxies: bool
    returns: bool
    suppressed: frozenset[str]


@dataclass
class Facts:
    """What the end-of-file checks need: the whole file's upstreams, proxy_passes..."""

    upstreams: dict[str, UpstreamFact] = field(default_factory=dict)
    duplicate_upstreams: list[UpstreamFact] = field(default_factory=list)
    proxy_passes: list[ProxyPassFact] = field(default_factory=list)
    locations: list[LocationFact] = field(default_factory=list)
    grpc_upstreams: set[str] = field(default_factory=set)  # named by a grpc(s):// grpc_pass
    http_blocks: int = 0
    server_blocks: int = 0
    generated: tuple[str, str] | None = None  # (spec, catalog) from the nginxgen header


@dataclass(frozen=True)
class Hit:
    rule: str
    file: str
    line: int | None
    message: str | None  # None: the rule's own one-line message
    suppressed: frozenset[str]


@dataclass(frozen=True)
class Suppression:
    file: str
    line: int
    rules: tuple[str, ...]
    reason: str


class Walk:
    """Walk one parsed file (with its includes) once, calling `checks`.

    The walk keeps its own stack (no recursion per block or include), so a config nested
    40,000 blocks deep costs what 40,000 blocks side by side do; an include that leads
    back to a file still being read is a finding, not an endless walk.
    """

    def __init__(
        self,
        payload: dict[str, Any],
        *,
        checks: Checks | None = None,  # none: only the walk's own (NGX000, NGX018)
        top_scope: Scope | None = None,
        max_walked: int = MAX_WALKED,
    ) -> None:
        self.checks = checks or Checks()
        self.configs: list[dict[str, Any]] = payload["config"]
        self.hits: list[Hit] = []
        self.facts = Facts()
        self.suppressions: list[Suppression] = []
        self.file = self.configs[0]["file"] if self.configs else ""
        self.parents: list[Node] = []
        self.scope = top_scope or Scope()
        self.suppressed: frozenset[str] = NONE  # rules off at the current node
        self._in_data = 0
        self._open: Counter[str] = Counter()  # directives of the blocks we are inside
        self._marks: list[frozenset[str]] = [NONE]  # markers in force, per open block
        self._reading: dict[int, None] = {}  # configs on the current include path, in order
        self.loops: set[tuple[str, int]] = set()  # (file, line) of includes that loop
        self._walked = 0
        self._max_walked = max_walked

    # --- what checks call ---------------------------------------------------------------

    def hit(
        self,
        rule: str,
        line: int | None,
        message: str | None = None,
        *,
        file: str | None = None,
        suppressed: frozenset[str] | None = None,
    ) -> None:
        self.hits.append(
            Hit(
                rule,
                file or self.file,
                line,
                message,
                self.suppressed if suppressed is None else suppressed,
            )
        )

    def children(self, node: Node) -> Iterator[Node]:
        """A block's directives with includes spliced in (comments left out)."""
        for child in node.get("block", ()):
            if child["directive"] == "#":
                continue
            if child["directive"] == "include" and child.get("includes"):
                for index in child["includes"]:
                    yield from (c for c in self.configs[index]["parsed"] if c["directive"] != "#")
            else:
                yield child

    @property
    def parent(self) -> str:
        return self.parents[-1]["directive"] if self.parents else ""

    def inside(self, directive: str) -> bool:
        return self._open[directive] > 0

    def marked(self, mark: str) -> bool:
        """Some block we are inside was given `mark` by a topic's marker."""
        return mark in self._marks[-1]

    # --- the walk -------------------------------------------------------------------------

    def run(self) -> None:
        if self.configs:
            self._reading[0] = None
            stack = [self._level(self.configs[0]["parsed"], self.configs[0]["file"])]
            while stack:  # each level yields the level below it; finished levels drop off
                below = next(stack[-1], None)
                if below is None:
                    stack.pop()
                else:
                    stack.append(below)
        for check in self.checks.at_end:
            check(self)

    def _level(self, nodes: list[Node], file: str) -> Iterator[Iterator[Any]]:
        """One block's (or one file's) statements; yields a level for each block and
        include in it, to be walked before the next statement."""
        outer_file, self.file = self.file, file
        outer_suppressed = self.suppressed
        block_off = outer_suppressed  # rules off for this whole block (or file)
        pending = NONE  # from an own-line comment: off for the next directive
        started = False
        last_line = -1
        on = self.checks.on
        for i, node in enumerate(nodes):
            d = node["directive"]
            if d == "#":
                rules = self._comment(node, file)
                if rules is None:
                    continue
                if not started:
                    block_off = block_off | rules
                elif node["line"] != last_line:
                    pending = pending | rules
                continue
            if self._walked >= self._max_walked:
                if self._walked == self._max_walked:
                    self._walked += 1
                    message = (
                        "includes repeat the same files so often that this config expands "
                        f"past {self._max_walked:,} directives; the rest is not checked"
                    )
                    self.hit(SYNTAX.id, node["line"], message, suppressed=NONE)
                break
            self._walked += 1
            started = True
            last_line = node["line"]
            off = block_off | pending
            pending = NONE
            # A trailing comment on this directive's line (it comes right after it).
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            if nxt is not None and nxt["directive"] == "#" and nxt["line"] == last_line:
                rules = self._comment(nxt, file, record=False)
                if rules:
                    off = off | rules
            self.suppressed = off
            if self._in_data:
                pass
            elif d not in DIRECTIVES and not d.endswith("_by_lua_block"):
                self.hit(UNKNOWN_DIRECTIVE.id, node["line"], f"unknown directive {d!r}")
            checks = on.get(d)
            if checks is not None:
                for check in checks:
                    check(node, self)
            for index in node.get("includes") or ():
                if index in self._reading:
                    self._loop(node, index)
                    continue
                included = self.configs[index]
                self._reading[index] = None
                yield self._level(included["parsed"], included["file"])
                self._reading.popitem()
                self.suppressed = off
            block = node.get("block")
            if block is not None:
                yield from self._enter(node, block, file)
            self.suppressed = block_off
        self.suppressed = outer_suppressed
        self.file = outer_file

    def _enter(self, node: Node, block: list[Node], file: str) -> Iterator[Iterator[Any]]:
        d = node["directive"]
        outer_scope = self.scope
        if d in SCOPE_BLOCKS:
            self.scope = outer_scope.enter(d, list(self.children(node)))
        data = d in DATA_BLOCKS
        self._in_data += data
        self.parents.append(node)
        self._open[d] += 1
        marks = {m for mark in self.checks.markers if (m := mark(node)) is not None}
        self._marks.append(self._marks[-1] | marks if marks else self._marks[-1])
        yield self._level(block, file)
        self._marks.pop()
        self._open[d] -= 1
        self.parents.pop()
        self._in_data -= data
        self.scope = outer_scope

    def _loop(self, node: Node, index: int) -> None:
        """An include of a file that is still being read: nginx would recurse until it
        crashes. One finding per include line, however many paths lead to it."""
        if (self.file, node["line"]) in self.loops:
            return
        self.loops.add((self.file, node["line"]))
        reading = list(self._reading)
        chain = reading[reading.index(index) :] + [index]
        files = " -> ".join(self.configs[i]["file"] for i in chain)
        message = f"include loop: {files}; nginx would include these files until it crashes"
        self.hit(SYNTAX.id, node["line"], message, suppressed=NONE)

    def _comment(self, node: Node, file: str, *, record: bool = True) -> frozenset[str] | None:
        text = node.get("comment", "")
        if "nginxgen:" not in text:
            return None
        m = _SUPPRESS.match(text)
        if m is None:
            header = _HEADER.match(text)
            if header and record and not self.parents and node["line"] <= 5:
                self.facts.generated = (header.group(1).strip(), header.group(2) or "")
            return None
        rules = tuple(r for r in m.group(1).split(",") if r)
        if record:
            self.suppressions.append(Suppression(file, node["line"], rules, m.group(2)))
        return frozenset(rules)
