"""The render stage's memos, owned by one RenderCache (a BuildCache part).

The Jinja environment (templates are read once, until a SIGHUP makes a new cache; the
spec's `templates_dir` overrides nginxgen's partials by name), each
upstream and location block's text, cached by value so an unchanged service is not
rendered again, and each block text's digest for the generation hash.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

import jinja2

from ..model.bff import IMAGE_CACHE_ZONE
from ..model.names import CONN_ZONE, MIRROR_PREFIX, NOBODY_PAGE, SERVICE_VAR, SPLIT_VAR
from ..model.plan import Location, Upstream
from ..util.resources import resource_dir
from .filters import (
    balance_arg,
    comment,
    lua_string,
    lua_value,
    nginx_regex,
    nginx_time,
    nginx_token,
    nginx_var,
    rewrite_to,
)

# Blocks kept per kind: 10,000 services and routes fit with room for their last versions.
MAX_BLOCKS = 65536
MAX_DIGESTS = 262_144


def environment(templates: Path, overrides: Path | None = None) -> jinja2.Environment:
    """`overrides` (templates_dir) wins by file name, also for the `{% include %}`s inside
    nginxgen's own partials; "nginxgen/NAME" always names the bundled one, so an override
    can wrap it."""
    builtin = jinja2.FileSystemLoader(str(templates))
    loaders: list[jinja2.BaseLoader] = [jinja2.PrefixLoader({"nginxgen": builtin}), builtin]
    if overrides is not None:
        loaders.insert(0, jinja2.FileSystemLoader(str(overrides)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
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
        regex_escape=re.escape,
        rewrite_to=rewrite_to,
    )
    return env


class TemplateError(Exception):
    """A partial in templates_dir that does not compile; str() is one sentence."""


class RenderCache:
    """Templates and rendered blocks. Blocks are cached by value (the Plan's frozen
    Upstream and Location), so equal inputs always give the text they gave before."""

    def __init__(
        self,
        templates: Path | None = None,
        max_blocks: int = MAX_BLOCKS,
        *,
        overrides: str | None = None,
    ) -> None:
        self.overrides = overrides  # the spec's templates_dir, None: nginxgen's own only
        where = Path(overrides) if overrides else None
        self.env = env = environment(templates or resource_dir("templates"), where)
        self._digests: dict[str, bytes] = {}

        # lru_caches on closures over `env`, not over self: no reference cycle to collect.
        @lru_cache(maxsize=max_blocks)
        def upstream(up: Upstream) -> str:
            """One upstream block."""
            return env.get_template("upstream.conf.j2").render(up=up)

        @lru_cache(maxsize=max_blocks)
        def location(loc: Location, metrics: bool = False) -> str:
            """One location block. `metrics`: the gateway counts requests in Lua, and a
            cached route's own log phase must call the counter too (a location's log
            handler replaces the server's)."""
            template = env.get_template("location.conf.j2")
            return template.render(
                loc=loc,
                gw={"metrics": metrics},
                conn_zone=CONN_ZONE,
                split_var=SPLIT_VAR,
                service_var=SERVICE_VAR,
                nobody_page=NOBODY_PAGE,
                mirror_prefix=MIRROR_PREFIX,
                image_cache_zone=IMAGE_CACHE_ZONE,
            )

        self.upstream = upstream
        self.location = location

    def compile_overrides(self) -> None:
        """Compile every partial of templates_dir now, so a syntax error is found before
        these templates replace the ones in use."""
        if self.overrides is None:
            return
        for path in sorted(Path(self.overrides).glob("*.j2")):
            try:
                self.env.get_template(path.name)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{path}:{exc.lineno}: {exc.message}") from None
            except (OSError, jinja2.TemplateError) as exc:
                raise TemplateError(f"{path}: {exc}") from None

    def digest(self, text: str) -> bytes:
        """sha256 of one block's text, for the generation hash."""
        known = self._digests.get(text)
        if known is None:
            if len(self._digests) >= MAX_DIGESTS:
                self._digests.clear()
            known = self._digests[text] = hashlib.sha256(text.encode("utf-8")).digest()
        return known
