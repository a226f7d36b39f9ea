"""Plan → nginx.conf text. Jinja lays out; every data value passes a quoting filter."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from . import __version__, gateway
from .cache import lua_config
from .heap import without_collector
from .plan import Location, Plan, Upstream
from .resources import resource_dir
from .spec import HASH_KEY, NginxSpec

_BARE = re.compile(r"^[A-Za-z0-9_./:\[\]@%+=,~*-]+$")


class RenderError(Exception):
    pass


def nginx_token(value: Any) -> str:
    """Exactly one nginx token for `value`: bare when safe, else double-quoted.

    `$` would start a variable inside quotes and control characters have no place in a
    config, so both are refused: the catalog never lets them through, this is the backstop.
    """
    text = str(value)
    if _BARE.match(text):
        return text
    if "$" in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise RenderError(f"refusing to place {text!r} in nginx.conf")
    if "'" not in text:
        return "'" + text.replace("\\", "\\\\") + "'"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_string(value: Any) -> str:
    """A Lua double-quoted string literal for `value` (inside *_by_lua_block)."""
    out = []
    for ch in str(value).encode("utf-8"):
        c = chr(ch)
        if c in '\\"':
            out.append("\\" + c)
        elif 0x20 <= ch < 0x7F and c not in "{}$'#;":
            out.append(c)
        else:  # braces too: crossplane's Lua lexer counts them even inside strings
            out.append(f"\\{ch:03d}")
    return '"' + "".join(out) + '"'


def lua_value(value: Any) -> str:
    """A Lua literal for plain data: nil, booleans, numbers, strings, lists and tables.

    Keys and strings go through `lua_string`, so data can never become Lua code.
    """
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise RenderError(f"refusing to place {value!r} in a Lua table")
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(lua_value(v) for v in value) + "}"
    if isinstance(value, dict):
        items = (f"[{lua_string(k)}] = {lua_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    raise RenderError(f"no Lua literal for {type(value).__name__}")


def balance_arg(value: Any) -> str:
    """An argument of the balancing directive: a vetted `hash` key or `consistent`.

    Hash keys are nginx variables, which `nginx_token` rightly refuses; only the forms the
    spec accepts (HASH_KEY) may pass, so registry data can never reach this spot.
    """
    text = str(value)
    if text == "consistent" or HASH_KEY.match(text):
        return text
    raise RenderError(f"refusing to place {text!r} in an upstream balancing directive")


def nginx_regex(value: Any) -> str:
    """A location regex as one quoted token. Unlike `nginx_token` it allows `$` (an anchor
    there: nginx expands no variables in a location regex); the spec checked the pattern."""
    text = str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise RenderError(f"refusing to place {text!r} in nginx.conf")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_time(seconds: float) -> str:
    """Seconds → nginx time token ('5s', '250ms')."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_IDENT = re.compile(r"^\$?[a-z_][a-z0-9_]*$")


def nginx_var(name: str) -> str:
    """`$name` for a variable nginxgen named itself; anything else is refused."""
    if not _IDENT.match(name):
        raise RenderError(f"refusing {name!r} as an nginx variable name")
    return name if name.startswith("$") else "$" + name


def comment(value: Any) -> str:
    """Text safe inside a `#` comment: one line, printable."""
    return re.sub(r"[^\x20-\x7e]", "?", str(value))


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        q=nginx_token,
        lua=lua_string,
        lua_value=lua_value,
        time=nginx_time,
        comment=comment,
        var=nginx_var,
        balance_arg=balance_arg,
        regex=nginx_regex,
    )
    return env


@lru_cache(maxsize=65536)
def render_upstream(upstream: Upstream) -> str:
    """One upstream block. Cached by value: an unchanged service is not rendered again."""
    return environment().get_template("upstream.conf.j2").render(up=upstream)


@lru_cache(maxsize=65536)
def render_location(loc: Location, metrics: bool = False) -> str:
    """One location block, cached by value like upstreams: 10,000 routes re-render cheaply.

    `metrics`: the gateway counts requests in Lua, and a cached route's own log phase
    must call the counter too (a location's log handler replaces the server's).
    """
    return (
        environment()
        .get_template("location.conf.j2")
        .render(loc=loc, gw={"metrics": metrics}, conn_zone=gateway.CONN_ZONE)
    )


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


def render(plan: Plan, nginx: NginxSpec, *, modules: tuple[str, ...] = ()) -> str:
    """The complete nginx.conf for `plan`."""
    return render_parts(plan, nginx, modules=modules).text


@without_collector
def render_parts(plan: Plan, nginx: NginxSpec, *, modules: tuple[str, ...] = ()) -> Rendered:
    """Render the skeleton once with marks, then splice in the cached per-block texts.

    Rendering the main template with one mark instead of 20,000 blocks keeps a
    one-instance change cheap at 10,000 services. The loopback status server answers
    the config's generation: a hash of everything else in the file, so a watcher can
    tell which config the running workers loaded.
    """
    temp_dir = nginx.temp_dir or str(Path(nginx.output).parent / "tmp")
    context = gateway_context(plan)
    marked = (
        environment()
        .get_template("nginx.conf.j2")
        .render(
            plan=plan,
            nginx=nginx,
            upstreams=[_UPSTREAMS[:-1]],
            locations={s.index: _SERVER_MARK.format(s.index) for s in plan.surface.servers},
            modules=modules,
            temp_dir=temp_dir,
            version=__version__,
            **context,
            cache_config=lua_config(plan.cache) if plan.cache else None,
            status_server=_STATUS,
        )
    )
    ups = tuple((u, render_upstream(u)) for u in plan.upstreams)
    metrics = plan.gateway.metrics
    locs = tuple((loc, render_location(loc, metrics)) for loc in plan.locations)
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
            digest.update(_block_digest(t))
        for piece, run in zip(pieces, runs, strict=True):
            digest.update(piece.encode("utf-8"))
            for _, t in run:
                digest.update(_block_digest(t))
        digest.update(before_status.encode("utf-8"))
        digest.update(tail.encode("utf-8"))
        gen = digest.hexdigest()[:16]
        template = environment().get_template("status_server.conf.j2")
        status = template.render(generation=gen, **context).rstrip("\n")
    body: list[str] = [head, blocks_u]
    for piece, run in zip(pieces, runs, strict=True):
        body.append(piece)
        if run:
            body.append("\n".join([t for _, t in run]) + "\n")
    text = "".join([*body, before_status, status, tail])
    skeleton = head + "".join(pieces) + before_status + status + tail
    return Rendered(text, skeleton, ups, locs)


_DIGESTS: dict[str, bytes] = {}  # block text -> sha256, for the generation hash
_DIGESTS_MAX = 262_144


def _block_digest(text: str) -> bytes:
    known = _DIGESTS.get(text)
    if known is None:
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.clear()
        known = _DIGESTS[text] = hashlib.sha256(text.encode("utf-8")).digest()
    return known


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
        "conn_zone": gateway.CONN_ZONE,
        "forwarding_cleared": gateway.FORWARDING_CLEARED,
        "metrics_dict": gateway.METRICS_DICT,
        "status_server_name": gateway.STATUS_SERVER_NAME,
        "metrics_dict_size": gateway.METRICS_DICT_SIZE,
        # nginx sizes the map hash itself up to this bound; more keys need a larger one.
        "map_hash_max_size": max(2048, 2 * keys),
        "lua_preload": gw.lua_modules,
        "lua_dir": str(resource_dir("lua")),
    }
