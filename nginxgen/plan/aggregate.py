"""The BFF layer, planned: an aggregate route's own location (Lua fans out) and one
internal location per part (the normal proxy machinery: the part's upstream, failover,
tries, timeouts capped by the part's budget); an image_fit route's width choice and the
named location that passes non-images untouched.

Every name and number is decided here; the templates lay them out and the Lua modules run
the table BffSetup.lua_config gives them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace

from ..model.bff import (
    IMAGE_PREFIX,
    PART_PREFIX,
    AggregateRoute,
    BffSetup,
    ImageFit,
    Part,
    PartTarget,
    Piece,
)
from ..model.plan import Guard, Location
from ..spec import Failover, Route, Spec, Timeouts
from ..spec.aggregate import Aggregate, AggregatePart

AGGREGATE_SERVICE = "(aggregate)"  # an aggregate route's service, as metrics label it
# A part asks for the whole, plain answer: a client's Range, validators or encodings must
# not turn it into a 206, a 304 or a gzip body the merge cannot read.
PART_CLEARED = (
    "Accept-Encoding",
    "Range",
    "If-Range",
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
)


def plan_bff(spec: Spec, guards: tuple[Guard, ...]) -> BffSetup | None:
    aggregates, fits = [], []
    for i, route in enumerate(spec.flat_routes):
        if route.aggregate is not None:
            forward = {f.name.lower(): f.variable for f in guards[i].forward}
            aggregates.append(aggregate_route(i, route.aggregate, forward))
        if route.image_fit is not None:
            fits.append(image_fit(i, route))
    if not aggregates and not fits:
        return None
    return BffSetup(tuple(aggregates), tuple(fits))


def aggregate_route(
    i: int, agg: Aggregate, forward: dict[str, str] | None = None
) -> AggregateRoute:
    """`forward`: the headers the route's auth service answers (lowercased name → the
    variable holding it). A template's {header.NAME} for one of them reads the auth
    service's value, never the client's header of that name."""
    forward = forward or {}
    parts = tuple(
        Part(
            name=name,
            location=part_location(i, name),
            pieces=tuple(_piece(p, forward) for p in part.pieces),
            required=part.required,
            allow=part.allow,
            deny=part.deny,
            budget=agg.budget(part),
        )
        for name, part in agg.parts.items()
    )
    copy = tuple(forward.values())
    return AggregateRoute(id=str(i), timeout=agg.timeout, parts=parts, copy_vars=copy)


def part_location(i: int, name: str) -> str:
    return f"{PART_PREFIX}{i}/{name}"


def _piece(p: tuple[str, ...] | str, forward: dict[str, str]) -> Piece:
    if isinstance(p, str):
        return Piece(text=p)
    kind, name = p
    source = f"{kind}.{name}"
    if kind == "cookie":
        return Piece(var=f"cookie_{name}", source=source)
    if kind == "header" and name.lower() in forward:
        return Piece(var=forward[name.lower()], source=source)
    if kind == "header":
        return Piece(var="http_" + name.lower().replace("-", "_"), source=source)
    if kind == "query":
        return Piece(arg=name, source=source)
    return Piece(segment=int(name), source=source)


def image_fit(i: int, route: Route) -> ImageFit:
    fit = route.image_fit
    assert fit is not None
    sources = fit.sources()
    headers = [name for kind, name in sources if kind == "header"]
    return ImageFit(
        id=str(i),
        widths=fit.widths,
        sources=sources,
        width_var=f"nginxgen_image_width_{i}",
        location=f"{IMAGE_PREFIX}{i}",
        buffer=fit.buffer,
        quality=fit.quality,
        cache_valid=fit.cache_valid,
        vary=", ".join(headers) if headers else None,
    )


def aggregate_locations(
    index: int, route: Route, base: Location, setup: BffSetup, live: Collection[str]
) -> list[Location]:
    """The route's own location (it answers from Lua) and its parts' internal ones.

    `base` is the Location the route would get as an ordinary one: its guard, cache and
    cleared headers apply to the aggregate, and the parts send what it would send."""
    agg = next(a for a in setup.aggregates if a.id == str(index))
    assert route.aggregate is not None
    own = replace(base, service=AGGREGATE_SERVICE, upstream=None, aggregate=agg)
    guard = base.guard
    forward = tuple((f.name, f.variable) for f in guard.forward) if guard else ()
    key_header = (guard.api_key_header,) if guard and guard.api_key_header else ()
    cleared = tuple(dict.fromkeys(base.cleared_headers + PART_CLEARED + key_header))
    out = [own]
    for part, spec_part in zip(agg.parts, route.aggregate.parts.values(), strict=True):
        out.append(_part_location(part, spec_part, route, base, cleared, forward, live, agg))
    return out


def _part_location(
    part: Part,
    spec_part: AggregatePart,
    route: Route,
    base: Location,
    cleared: tuple[str, ...],
    forward: tuple[tuple[str, str], ...],
    live: Collection[str],
    agg: AggregateRoute,
) -> Location:
    b = part.budget
    t = route.timeouts
    f = route.failover
    return Location(
        path=part.location,
        exact=True,
        service=spec_part.service,
        upstream=spec_part.service if spec_part.service in live else None,
        strip_prefix=False,
        failover=Failover(
            on=f.on,
            tries=f.tries,
            timeout=b if f.timeout == 0 else min(f.timeout, b),
            max_tries=f.max_tries,
        ),
        timeouts=Timeouts(connect=min(t.connect, b), read=b, send=min(t.send, b)),
        client_max_body_size=None,
        unavailable_body=json.dumps(
            {"error": "service unavailable", "service": spec_part.service}, separators=(",", ":")
        ),
        upstream_host=base.upstream_host,
        cleared_headers=cleared,
        server=base.server,
        part=PartTarget(aggregate=agg.id, part=part.name, forward=forward),
        dynamic=base.dynamic,  # endpoints: dynamic — Lua answers the part's 503
    )


def image_fit_locations(index: int, base: Location, setup: BffSetup) -> list[Location]:
    """The route's location (Lua chooses the width and fetches the original; image_filter
    resizes what it prints) and the internal one that proxies to the service, caching
    originals. A non-image is handed to that one whole (ngx.exec) and passes untouched."""
    if base.upstream is None:
        return [base]  # nobody alive: the 503 answer has no image to fit
    fit = next(f for f in setup.image_fits if f.id == str(index))
    guard = base.guard
    key_header = (guard.api_key_header,) if guard and guard.api_key_header else ()
    original = replace(
        base,
        path=fit.location,
        exact=True,
        regex=False,
        guard=None,
        cleared_headers=tuple(dict.fromkeys(base.cleared_headers + key_header)),
        snippet=None,
        client_max_body_size=None,
        image_fit=fit,
        part=PartTarget(aggregate=f"image_fit {index}", part="original"),
        http=None,  # methods are answered by the route's own location
    )
    return [replace(base, upstream=None, image_fit=fit), original]
