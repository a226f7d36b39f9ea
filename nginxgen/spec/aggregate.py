"""A route's `aggregate:` (several services, one JSON answer) and `image_fit:` (images cut
to the device's width): the BFF keys, validated here, planned in plan/aggregate.py.

A part's path template is decided here, once: which request values it reads
(`{cookie.NAME}`, `{header.NAME}`, `{query.NAME}`, `{path.N}`) and the literal text around
them. Each value fills exactly one whole path segment; Lua percent-encodes it and refuses
values that would still mean something else to a backend (lua/nginxgen/aggregate/path.lua).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.functional_validators import AfterValidator

from .fields import Duration, Model, ServiceName, keyed

# Literal template text: what a route path may hold, without '{' '}' (placeholders) and
# without '%' (a literal escape would be ambiguous next to an encoded value).
_LITERAL = re.compile(r"[A-Za-z0-9._~!&'()*+,=:@/-]*")
_QUERY = re.compile(r"[A-Za-z0-9._~!&'()*+,=:@/?-]*")
_PLACEHOLDER = re.compile(r"\{([a-z]+)\.([^{}]*)\}")
_COOKIE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_ARG = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PART_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_FIELD = re.compile(r"[^\x00-\x1f\"\\]{1,128}")
SOURCES = ("cookie", "header", "query", "path")
MAX_PARTS = 16
MAX_PATH_SEGMENT = 32  # {path.N}: N from 1 to this


def _fields(names: tuple[str, ...]) -> tuple[str, ...]:
    bad = [n for n in names if not _FIELD.fullmatch(n)]
    if bad:
        raise ValueError(f"not field names (1-128 characters, no quotes or controls): {bad}")
    if len(set(names)) != len(names):
        raise ValueError(f"a field is listed twice: {list(names)}")
    return names


FieldNames = Annotated[tuple[str, ...], AfterValidator(_fields)]


def parse_template(template: str) -> tuple[tuple[str, ...] | str, ...]:
    """'/carts/{cookie.session}?v=2' → ('/carts/', ('cookie', 'session'), '?v=2').

    Pieces are literal text or (source, name) pairs. Raises ValueError with the reason."""
    if not template.startswith("/"):
        raise ValueError(f"must start with '/': {template!r}")
    path, sep, query = template.partition("?")
    if sep and not _QUERY.fullmatch(query):
        raise ValueError(
            f"the query of {template!r} may hold only URL characters, no placeholders or '%'"
        )
    pieces: list[tuple[str, ...] | str] = []
    at = 0
    for m in _PLACEHOLDER.finditer(path):
        literal = path[at : m.start()]
        if not _LITERAL.fullmatch(literal):
            raise ValueError(f"{template!r}: {literal!r} holds characters a path cannot")
        if not literal.endswith("/") or (m.end() < len(path) and path[m.end()] != "/"):
            raise ValueError(
                f"{template!r}: {m.group(0)} must be a whole path segment, between '/'s"
            )
        if literal:
            pieces.append(literal)
        pieces.append(_source(m.group(1), m.group(2), template))
        at = m.end()
    rest = path[at:]
    if not _LITERAL.fullmatch(rest):
        raise ValueError(
            f"{template!r}: placeholders are {{cookie.NAME}}, {{header.NAME}}, "
            f"{{query.NAME}}, {{path.N}}; other text may hold only URL path characters"
        )
    if rest:
        pieces.append(rest)
    if "/../" in path + "/" or "/./" in path + "/":
        raise ValueError(f"{template!r}: '.' and '..' segments are not allowed")
    if sep:
        pieces.append("?" + query)
    return tuple(pieces)


def _source(kind: str, name: str, template: str) -> tuple[str, str]:
    patterns = {"cookie": _COOKIE, "header": _HEADER, "query": _ARG}
    if kind == "path":
        if not name.isdigit() or not 1 <= int(name) <= MAX_PATH_SEGMENT:
            raise ValueError(f"{template!r}: {{path.N}} needs N from 1 to {MAX_PATH_SEGMENT}")
        return (kind, str(int(name)))
    pattern = patterns.get(kind)
    if pattern is None:
        raise ValueError(f"{template!r}: unknown source {kind!r}; use one of {', '.join(SOURCES)}")
    if not pattern.fullmatch(name):
        raise ValueError(f"{template!r}: {name!r} is not a {kind} name")
    return (kind, name)


class AggregatePart(Model):
    service: ServiceName
    path: str  # a template: see parse_template
    required: bool = False  # fails → the whole answer is a 502 naming it
    timeout: Duration | None = None  # None: the aggregate's timeout
    allow: FieldNames | None = None  # keep only these top-level fields
    deny: FieldNames | None = None  # drop these top-level fields

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parse_template(v)
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float | None) -> float | None:
        if v is not None and not 0.001 <= v <= 600:
            raise ValueError(f"must be between 1ms and 10m, got {v:g}s")
        return v

    @model_validator(mode="after")
    def _one_filter(self) -> AggregatePart:
        if self.allow is not None and self.deny is not None:
            raise ValueError("set allow or deny, not both")
        return self

    @property
    def pieces(self) -> tuple[tuple[str, ...] | str, ...]:
        return parse_template(self.path)


class Aggregate(Model):
    timeout: Duration = 5.0  # the whole answer
    parts: dict[str, AggregatePart] = Field(min_length=1, max_length=MAX_PARTS)

    @field_validator("parts")
    @classmethod
    def _part_names(cls, v: dict[str, AggregatePart]) -> dict[str, AggregatePart]:
        for name in v:
            if not _PART_NAME.fullmatch(name):
                raise keyed(
                    (name,), f"part name {name!r}: use a letter or '_' then letters, digits, '_'"
                )
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if not 0.001 <= v <= 600:
            raise ValueError(f"must be between 1ms and 10m, got {v:g}s")
        return v

    def budget(self, part: AggregatePart) -> float:
        """The time a part may take: its own timeout, never past the whole answer's."""
        return min(part.timeout, self.timeout) if part.timeout is not None else self.timeout


# Client hints that carry the width an image is shown at, most precise first.
CLIENT_HINTS = ("Sec-CH-Width", "Width", "Sec-CH-Viewport-Width", "Viewport-Width")
_FROM = re.compile(
    r"^(?:query ([A-Za-z0-9_-]{1,64})|header ([A-Za-z0-9][A-Za-z0-9-]{0,63})|client-hint)$"
)


def _from(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ImageFit(Model):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, populate_by_name=True
    )
    widths: tuple[int, ...] = Field(min_length=1, max_length=32)
    # Where the wanted width comes from, tried in order: `query w`, `header Viewport-Width`,
    # `client-hint` (CLIENT_HINTS).
    from_: Annotated[tuple[str, ...], Field(alias="from", min_length=1)] = ("client-hint",)
    buffer: Literal["1m", "2m", "4m", "8m", "16m", "32m"] = "8m"  # largest image resized
    quality: int = Field(80, ge=1, le=100)  # JPEG and WebP
    cache_valid: Duration = 3600.0  # how long an original image is kept (proxy_cache)

    @field_validator("from_", mode="before")
    @classmethod
    def _from_list(cls, v: Any) -> Any:
        return _from(v)

    @field_validator("from_")
    @classmethod
    def _from(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            if not _FROM.match(item):
                raise ValueError(
                    f"from: {item!r}: use 'query NAME', 'header NAME' or 'client-hint'"
                )
        return v

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [w for w in v if not 16 <= w <= 8192]
        if bad:
            raise ValueError(f"widths are pixels from 16 to 8192, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"a width is listed twice: {list(v)}")
        return tuple(sorted(v))

    def sources(self) -> tuple[tuple[str, str], ...]:
        """('arg', 'w') / ('header', 'Viewport-Width') in the order they are tried."""
        out: list[tuple[str, str]] = []
        for item in self.from_:
            if item == "client-hint":
                out += [("header", h) for h in CLIENT_HINTS]
            else:
                kind, name = item.split(" ", 1)
                out.append(("arg" if kind == "query" else "header", name))
        return tuple(dict.fromkeys(out))


def bff_conflict(r: Any) -> str | None:
    """Why a route's aggregate or image_fit cannot go with its other keys (None: it can).
    `r` is a spec.routes.Route (which imports this module)."""
    if r.match != "regex" and r.path.startswith("/_nginxgen/"):
        return "paths under /_nginxgen/ are the gateway's own internal locations"
    if r.aggregate is None:
        if r.service is None:
            return "a route needs a service (or aggregate: with parts)"
    else:
        if r.service is not None:
            return (
                "service and aggregate both say where requests go; "
                "an aggregate names a service per part"
            )
        for key, used, why in (
            ("protocol: grpc", r.protocol == "grpc", "an aggregate answers JSON"),
            ("websocket: true", r.websocket, "an aggregate answers once"),
            ("streaming: true", r.streaming, "an aggregate answers once, when its parts have"),
            ("strip_prefix", r.strip_prefix, "each part has its own path"),
            ("rewrite", r.rewrite is not None, "each part has its own path"),
            ("upstream_tls", r.upstream_tls is not None, "set it on the part's own route"),
            ("image_fit", r.image_fit is not None, "an aggregate answers JSON"),
            ("headers", r.headers is not None, "not rendered on an aggregate yet"),
            ("cors", r.cors is not None, "not rendered on an aggregate yet"),
        ):
            if used:
                return f"{key} cannot go with aggregate ({why})"
        if r.methods is not None and set(r.methods) - {"GET", "HEAD"}:
            return "an aggregate route answers GET and HEAD only: remove other methods"
    if r.image_fit is not None:
        for key, used, why in (
            ("protocol: grpc", r.protocol == "grpc", "gRPC answers are not images"),
            ("websocket: true", r.websocket, "a WebSocket is not an image"),
            ("streaming: true", r.streaming, "an image is resized once it is whole"),
            ("cache", r.cache is not None, "image_fit keeps the originals in its own cache"),
            ("strip_prefix", r.strip_prefix, "the original is fetched by the path asked for"),
            ("rewrite", r.rewrite is not None, "the original is fetched by the path asked for"),
            ("headers", r.headers is not None, "not rendered on image_fit yet"),
            ("cors", r.cors is not None, "not rendered on image_fit yet"),
            ("upstream_tls", r.upstream_tls is not None, "not rendered on image_fit yet"),
            (
                "auth.forward_headers",
                bool(r.auth and r.auth.forward_headers),
                "the originals are shared by every user in the image cache",
            ),
        ):
            if used:
                return f"{key} cannot go with image_fit ({why})"
    return None
