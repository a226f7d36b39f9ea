"""The BFF layer's plan values: aggregate routes and their parts, image_fit routes.

plan/aggregate.py decides them; templates/aggregate_location.conf.j2 and
image_fit_location.conf.j2 lay them out; lua/nginxgen/aggregate.lua and imagefit.lua run
them from the configuration `lua_config` gives init_by_lua_block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec.cache import parse_size

# Where the aggregate's internal part locations live; no route may start with it.
PART_PREFIX = "/_nginxgen/part/"
PART_URI_VAR = "nginxgen_part_uri"  # the upstream URI of one part, set by Lua per subrequest
IMAGE_CACHE_ZONE = "nginxgen_images"
IMAGE_PREFIX = "/_nginxgen/image/"  # image_fit's internal location for the originals


@dataclass(frozen=True)
class Piece:
    """One piece of a part's path: literal text, or where one segment's value comes from."""

    text: str | None = None  # literal, already URL text
    var: str | None = None  # an nginx variable (cookie_NAME, http_NAME), raw
    arg: str | None = None  # a query argument, percent-decoded first
    segment: int | None = None  # the Nth segment of the request path
    source: str = ""  # as the spec wrote it (cookie.session), for error answers


@dataclass(frozen=True)
class Part:
    name: str
    location: str  # its internal location's path
    pieces: tuple[Piece, ...]
    required: bool
    allow: tuple[str, ...] | None
    deny: tuple[str, ...] | None
    budget: float  # seconds: connect, each read, retries; never past the whole timeout


@dataclass(frozen=True)
class AggregateRoute:
    id: str
    timeout: float
    parts: tuple[Part, ...]
    copy_vars: tuple[str, ...] = ()  # auth_request_set variables the parts send on


@dataclass(frozen=True)
class PartTarget:
    """What marks a Location as one aggregate part's internal location."""

    aggregate: str  # AggregateRoute.id
    part: str
    # Headers the auth service's answer names (header, variable): the subrequest gets the
    # variables' values from Lua, since a capture starts with variables of its own.
    forward: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ImageFit:
    id: str
    widths: tuple[int, ...]
    sources: tuple[tuple[str, str], ...]  # ("arg", "w") / ("header", "Viewport-Width")
    width_var: str  # without `$`
    location: str  # the internal location that fetches (and caches) the original
    buffer: str
    quality: int
    cache_valid: float
    vary: str | None  # request headers the answer depends on


@dataclass(frozen=True)
class BffSetup:
    aggregates: tuple[AggregateRoute, ...] = ()
    image_fits: tuple[ImageFit, ...] = ()

    def lua_config(self) -> dict[str, Any]:
        """What init_by_lua_block gives nginxgen.aggregate and nginxgen.imagefit."""
        return {
            "aggregates": {a.id: _aggregate(a) for a in self.aggregates},
            "image_fits": {
                f.id: {
                    "widths": list(f.widths),
                    "sources": [list(s) for s in f.sources],
                    "location": f.location,
                    "uri_var": PART_URI_VAR,
                    "max_bytes": parse_size(f.buffer),
                }
                for f in self.image_fits
            },
        }


def _aggregate(a: AggregateRoute) -> dict[str, Any]:
    parts = []
    for p in a.parts:
        part: dict[str, Any] = {
            "name": p.name,
            "location": p.location,
            "required": p.required,
            "pieces": [_piece(x) for x in p.pieces],
        }
        if p.allow is not None:
            part["allow"] = list(p.allow)
        if p.deny is not None:
            part["deny"] = list(p.deny)
        parts.append(part)
    return {
        "timeout": a.timeout,
        "parts": parts,
        "uri_var": PART_URI_VAR,
        "copy_vars": list(a.copy_vars),
    }


def _piece(p: Piece) -> dict[str, Any]:
    if p.text is not None:
        return {"text": p.text}
    out: dict[str, Any] = {"source": p.source}
    if p.var is not None:
        out["var"] = p.var
    if p.arg is not None:
        out["arg"] = p.arg
    if p.segment is not None:
        out["segment"] = p.segment
    return out
