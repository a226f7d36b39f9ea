"""Plan → nginx.conf text. Templates lay out (templates/ at the repository's top, shipped
in the wheel); every value from data passes a filter (filters.py); blocks are cached by
value in a RenderCache (blocks.py); conf.py assembles the file and its generation."""

from __future__ import annotations

from .blocks import RenderCache
from .conf import GENERATION_RE, Rendered, config_generation, gateway_context, render, render_parts
from .filters import (
    RenderError,
    balance_arg,
    comment,
    lua_string,
    lua_value,
    nginx_regex,
    nginx_time,
    nginx_token,
    nginx_var,
)

__all__ = [
    "GENERATION_RE",
    "RenderCache",
    "RenderError",
    "Rendered",
    "balance_arg",
    "comment",
    "config_generation",
    "gateway_context",
    "lua_string",
    "lua_value",
    "nginx_regex",
    "nginx_time",
    "nginx_token",
    "nginx_var",
    "render",
    "render_parts",
]
