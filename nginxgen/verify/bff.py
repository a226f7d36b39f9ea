"""The round trip for the BFF layer: an aggregate route answers from its Lua call and
proxies nothing itself; each part's location is internal and proxies to its part's
upstream with the URI Lua set; an image_fit route runs its width choice and resizes.

A part location without `internal` would let any client reach a service's path of its
choosing through the gateway, which `nginx -t` would happily accept."""

from __future__ import annotations

from typing import Any

from ..model.bff import PART_URI_VAR
from ..model.plan import Location
from ..render.filters import lua_string
from .findings import Finding

Block = dict[str, Any]


def expected_pass(loc: Location) -> list[list[str]] | None:
    """proxy_pass of a BFF location; None: not one, the ordinary rules apply."""
    if loc.aggregate is not None or (loc.image_fit is not None and loc.part is None):
        return []
    if loc.part is not None:
        return [[f"http://{loc.upstream}${PART_URI_VAR}"]] if loc.upstream else []
    return None


def bff_lua(loc: Location) -> list[tuple[str, str]]:
    """The BFF one-liners a location runs, after the cache's."""
    if loc.aggregate is not None:
        call = f'require("nginxgen.aggregate").serve({lua_string(loc.aggregate.id)})'
        return [("content_by_lua_block", call)]
    fit = loc.image_fit
    if fit is not None and loc.part is None:
        args = f"{lua_string(fit.id)}, {lua_string(fit.width_var)}"
        return [("content_by_lua_block", f'require("nginxgen.imagefit").serve({args})')]
    return []


def bff_findings(block: Block, loc: Location) -> list[Finding]:
    statements = block.get("block", [])
    names = [d["directive"] for d in statements]
    findings = []
    if loc.part is not None and "internal" not in names:
        findings.append(
            Finding("round-trip", f"part location {loc.path!r} is not internal", block["line"])
        )
    if loc.part is None and "internal" in names:
        findings.append(Finding("round-trip", f"route {loc.path!r} is internal", block["line"]))
    fit = loc.image_fit
    if fit is not None and loc.part is None:
        resize = [d["args"] for d in statements if d["directive"] == "image_filter"]
        if resize != [["resize", f"${fit.width_var}", "-"]]:
            findings.append(
                Finding(
                    "round-trip",
                    f"route {loc.path!r} resizes with {resize}, planned $" + fit.width_var,
                    block["line"],
                )
            )
    elif "image_filter" in names:
        findings.append(
            Finding(
                "round-trip", f"route {loc.path!r} has an unplanned image_filter", block["line"]
            )
        )
    return findings
