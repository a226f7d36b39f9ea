"""Plan → nginx.conf text. Jinja lays out; every data value passes a quoting filter."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..model import names
from ..model.bff import IMAGE_CACHE_ZONE
from ..model.plan import Location, Plan, Upstream
from ..model.surface import GRPC_500
from ..plan.cache import lua_config
from ..plan.endpoints import plan_document
from ..spec import NginxSpec
from ..util.heap import without_collector
from ..util.resources import resource_dir
from .blocks import RenderCache
from .filters import lua_pieces

# Marks where the cached blocks and the status server go. NUL can never come out of a
# template filter, so a mark cannot collide with rendered data.
_UPSTREAMS, _STATUS = "\x00U\n", "\x00S"
_SERVER_MARK = "\x00L{}"  # where server {index}'s locations go, inside its block
GENERATION_RE = re.compile(r"return 200 ([0-9a-f]{16});")


@dataclass(frozen=True)
class Rendered:
    """A config and the pieces it was assembled from, so verify can check only new ones."""

    text: str
    skeleton: str  # `text` without the upstream and location blocks
    upstreams: tuple[tuple[Upstream, str], ...]
    locations: tuple[tuple[Location, str], ...]


def render(
    plan: Plan,
    nginx: NginxSpec,
    *,
    modules: tuple[str, ...] = (),
    cache: RenderCache | None = None,
    lua_dir: Path | None = None,
) -> str:
    """The complete nginx.conf for `plan`."""
    return render_parts(plan, nginx, modules=modules, cache=cache, lua_dir=lua_dir).text


@without_collector
def render_parts(
    plan: Plan,
    nginx: NginxSpec,
    *,
    modules: tuple[str, ...] = (),
    cache: RenderCache | None = None,
    lua_dir: Path | None = None,
) -> Rendered:
    """Render the skeleton once with marks, then splice in the cached per-block texts.

    Rendering the main template with one mark instead of 20,000 blocks keeps a
    one-instance change cheap at 10,000 services. The loopback status server answers
    the config's generation: a hash of everything else in the file, so a watcher can
    tell which config the running workers loaded. Blocks come from `cache` when it holds
    them (a fresh RenderCache when none is given). `lua_package_path` names `lua_dir`
    (the tree installed next to the config), or the package's own Lua files.
    """
    cache = cache if cache is not None else RenderCache()
    temp_dir = nginx.temp_dir or str(Path(nginx.output).parent / "tmp")
    context = gateway_context(plan)
    context["split_state"] = str(Path(nginx.output).parent / names.SPLIT_STATE)
    context["lua_dir"] = str(lua_dir or resource_dir("lua"))
    marked = cache.env.get_template("nginx.conf.j2").render(
        plan=plan,
        nginx=nginx,
        upstreams=[_UPSTREAMS[:-1]],
        locations={s.index: _SERVER_MARK.format(s.index) for s in plan.surface.servers},
        modules=modules,
        temp_dir=temp_dir,
        version=__version__,
        **context,
        cache_config=lua_config(plan.cache) if plan.cache else None,
        feed_plan=feed_plan(plan),
        bff_config=plan.bff.lua_config() if plan.bff else None,
        status_server=_STATUS,
    )
    ups = tuple((u, cache.upstream(u)) for u in plan.upstreams)
    metrics = plan.gateway.metrics
    locs = tuple((loc, cache.location(loc, metrics)) for loc in plan.locations)
    # Split the small marked text rather than replacing in the 10 MB one: no big copies.
    head, rest = marked.split(_UPSTREAMS)
    # Each server's locations go at its mark: skeleton pieces and block runs alternate.
    pieces: list[str] = []
    runs: list[list[tuple[Location, str]]] = []
    by_server: dict[int, list[tuple[Location, str]]] = {}
    for loc, t in locs:
        by_server.setdefault(loc.server, []).append((loc, t))
    for srv in plan.surface.servers:
        piece, rest = rest.split(_SERVER_MARK.format(srv.index) + "\n", 1)
        pieces.append(piece)
        runs.append(by_server.get(srv.index, []))
    before_status, _, tail = rest.partition(_STATUS)
    blocks_u = "\n".join([t for _, t in ups]) + "\n" if ups else ""
    status = ""
    if plan.gateway.status_listen:
        # Blocks enter the hash by their own (cached) digests: hashing 10 MB on every
        # pass would cost more than the rest of a one-change render.
        digest = hashlib.sha256()
        digest.update(head.encode("utf-8"))
        for _, t in ups:
            digest.update(cache.digest(t))
        for piece, run in zip(pieces, runs, strict=True):
            digest.update(piece.encode("utf-8"))
            for _, t in run:
                digest.update(cache.digest(t))
        digest.update(before_status.encode("utf-8"))
        digest.update(tail.encode("utf-8"))
        gen = digest.hexdigest()[:16]
        template = cache.env.get_template("status_server.conf.j2")
        status = template.render(generation=gen, **context).rstrip("\n")
    body: list[str] = [head, blocks_u]
    for piece, run in zip(pieces, runs, strict=True):
        body.append(piece)
        if run:
            body.append("\n".join([t for _, t in run]) + "\n")
    text = "".join([*body, before_status, status, tail])
    skeleton = head + "".join(pieces) + before_status + status + tail
    return Rendered(text, skeleton, ups, locs)


def feed_plan(plan: Plan) -> str | None:
    """The plan document `nginxgen.endpoints.init` gets, as Lua string pieces."""
    if plan.feed is None:
        return None
    doc = plan_document(plan)
    return lua_pieces(json.dumps(doc, separators=(",", ":")))


def config_generation(text: str) -> str | None:
    """The generation a rendered config announces on its status listener, if any."""
    m = GENERATION_RE.search(text[-4000:])
    return m.group(1) if m else None


def gateway_context(plan: Plan) -> dict[str, Any]:
    """Names and sizes the gateway partials need besides the Plan itself."""
    gw = plan.gateway
    keys = sum(len(ks.digests) for ks in gw.key_sets)
    return {
        "gw": gw,
        "auth_guards": [
            loc.guard
            for loc in plan.locations
            if loc.guard and (loc.guard.key_set or loc.guard.auth_location)
        ],
        "limit_guards": [loc.guard for loc in plan.locations if loc.guard and loc.guard.limited],
        "conn_zone": names.CONN_ZONE,
        "forwarding_cleared": names.FORWARDING_CLEARED,
        "metrics_dict": names.METRICS_DICT,
        "status_server_name": names.STATUS_SERVER_NAME,
        "metrics_dict_size": names.METRICS_DICT_SIZE,
        # nginx sizes the map hash itself up to this bound; more keys need a larger one.
        "map_hash_max_size": max(2048, 2 * keys),
        "lua_preload": gw.lua_modules,
        "split_dict": (names.SPLIT_DICT, names.SPLIT_DICT_SIZE),
        "split_paths": (names.SPLIT_PATH, names.SPLIT_STATUS_PATH),
        "split_token": plan.split_token_sha256 or "0" * 64,
        "mirror_prefix": names.MIRROR_PREFIX,
        "mirrors": mirrors_by_server(plan),
        "nobody_page": names.NOBODY_PAGE,
        "grpc_500": GRPC_500,
        "feed_dict": names.FEED_DICT,
        "health_dict": names.HEALTH_DICT,
        "health_dict_size": names.HEALTH_DICT_SIZE,
        "feed_path": names.FEED_PATH,
        "feed_status_path": names.FEED_STATUS_PATH,
        "feed_max_body": names.FEED_MAX_BODY,
        "image_cache_zone": IMAGE_CACHE_ZONE,
    }


def split_documents(plan: Plan) -> str:
    """Every split service's document as the Lua side reads it (plan/split.py), as JSON."""
    docs = {s.service: s.document() for s in plan.splits}
    return json.dumps(docs, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def mirrors_by_server(plan: Plan) -> dict[int, list[str]]:
    """The services whose split routes send mirror copies, per server block."""
    out: dict[int, list[str]] = {}
    for loc in plan.locations:
        if loc.mirror and loc.upstream and loc.service not in out.get(loc.server, []):
            out.setdefault(loc.server, []).append(loc.service)
    return out
