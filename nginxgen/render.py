"""Plan → nginx.conf text. Jinja lays out; every data value passes a quoting filter."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from . import __version__
from .plan import Location, Plan, Upstream
from .resources import resource_dir
from .spec import NginxSpec

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


def nginx_time(seconds: float) -> str:
    """Seconds → nginx time token ('5s', '250ms')."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


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
    env.filters.update(q=nginx_token, lua=lua_string, time=nginx_time, comment=comment)
    return env


@lru_cache(maxsize=65536)
def render_upstream(upstream: Upstream) -> str:
    """One upstream block. Cached by value: an unchanged service is not rendered again."""
    return environment().get_template("upstream.conf.j2").render(up=upstream)


@lru_cache(maxsize=65536)
def render_location(loc: Location) -> str:
    """One location block, cached by value like upstreams: 10,000 routes re-render cheaply."""
    return environment().get_template("location.conf.j2").render(loc=loc)


# Marks where the cached blocks and the status server go. NUL can never come out of a
# template filter, so a mark cannot collide with rendered data.
_UPSTREAMS, _LOCATIONS, _STATUS = "\x00U\n", "\x00L\n", "\x00S"
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


def render_parts(plan: Plan, nginx: NginxSpec, *, modules: tuple[str, ...] = ()) -> Rendered:
    """Render the skeleton once with marks, then splice in the cached per-block texts.

    Rendering the main template with one mark instead of 20,000 blocks keeps a
    one-instance change cheap at 10,000 services. The loopback status server answers
    the config's generation: a hash of everything else in the file, so a watcher can
    tell which config the running workers loaded.
    """
    temp_dir = nginx.temp_dir or str(Path(nginx.output).parent / "tmp")
    marked = (
        environment()
        .get_template("nginx.conf.j2")
        .render(
            plan=plan,
            nginx=nginx,
            upstreams=[_UPSTREAMS[:-1]],
            locations=[_LOCATIONS[:-1]],
            modules=modules,
            temp_dir=temp_dir,
            version=__version__,
            status_server=_STATUS,
        )
    )
    ups = tuple((u, render_upstream(u)) for u in plan.upstreams)
    locs = tuple((loc, render_location(loc)) for loc in plan.locations)
    # Split the small marked text rather than replacing in the 10 MB one: no big copies.
    head, rest = marked.split(_UPSTREAMS)
    middle, rest = rest.split(_LOCATIONS)
    before_status, _, tail = rest.partition(_STATUS)
    blocks_u = "".join([t + "\n" for _, t in ups])
    blocks_l = "".join([t + "\n" for _, t in locs])
    parts = [head, blocks_u, middle, blocks_l, before_status, tail]
    status = ""
    if nginx.status_listen != "off":
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part.encode("utf-8"))
        gen = digest.hexdigest()[:16]
        template = environment().get_template("status.conf.j2")
        status = template.render(nginx=nginx, generation=gen).rstrip("\n")
    text = "".join([head, blocks_u, middle, blocks_l, before_status, status, tail])
    skeleton = head + middle + before_status + status + tail
    return Rendered(text, skeleton, ups, locs)


def config_generation(text: str) -> str | None:
    """The generation a rendered config announces on its status listener, if any."""
    m = GENERATION_RE.search(text[-2000:])
    return m.group(1) if m else None
