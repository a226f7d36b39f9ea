"""What a route may do to HTTP on its way through: methods, regex paths, rewrites, header
changes, CORS, and TLS to the upstream."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.functional_validators import AfterValidator, BeforeValidator

from .fields import Duration, Model, SpecPath, off_is_none
from .gateway import HeaderName

# Methods nginx proxies. It answers TRACE with 405 itself and has no CONNECT proxying.
HTTP_METHODS = (
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "OPTIONS",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
)


def _method(value: Any) -> str:
    text = str(value).upper() if isinstance(value, str) else value
    if text in ("TRACE", "CONNECT"):
        raise ValueError(f"nginx never proxies {text} (it answers 405 or 400 itself)")
    if text not in HTTP_METHODS:
        raise ValueError(f"unknown HTTP method {value!r}; use {', '.join(HTTP_METHODS)}")
    return str(text)


Method = Annotated[str, BeforeValidator(_method)]


def method_list(value: Any) -> Any:
    """`methods: GET` or a list; written once each, in the order given."""
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (list, tuple)):
        if not items:
            raise ValueError("list at least one method, or leave methods out to allow all")
        return list(dict.fromkeys(_method(m) for m in items))
    return items


Methods = Annotated[tuple[Method, ...], BeforeValidator(method_list)]


def allowed_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """What a `methods` list lets through: GET brings HEAD (RFC 9110, and nginx's own
    limit_except), so a health checker's HEAD is not a 405."""
    if "GET" in methods and "HEAD" not in methods:
        return (*methods, "HEAD")
    return methods


# --- regular expressions ----------------------------------------------------------------

# Escapes Python's `re` knows and PCRE (nginx) refuses or reads otherwise.
_PCRE_ESCAPES = {
    "N": "\\N (PCRE reads it as 'not a newline')",
    "u": "\\u escapes (PCRE has no \\u; write the character)",
    "U": "\\U escapes (PCRE has no \\U; write the character)",
}
_INLINE_FLAGS = re.compile(r"\(\?([a-zA-Z-]+)[:)]")


def check_regex(pattern: str) -> str:
    """A regex both Python's `re` and nginx's PCRE accept, with the same meaning."""
    if not pattern:
        raise ValueError("a regular expression must not be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in pattern):
        raise ValueError(f"control characters cannot be part of a path regex: {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression ({exc}): {pattern!r}") from None
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            why = _PCRE_ESCAPES.get(pattern[i + 1])
            if why:
                raise ValueError(f"nginx's PCRE does not accept {why}: {pattern!r}")
            i += 2
            continue
        i += 1
    for m in _INLINE_FLAGS.finditer(pattern):
        bad = set(m.group(1)) - set("imsx-")
        if bad:
            raise ValueError(
                f"inline flag(s) {''.join(sorted(bad))!r} are Python's; PCRE knows i, m, s, x: "
                f"{pattern!r}"
            )
    return pattern


Regex = Annotated[str, AfterValidator(check_regex)]


class Rewrite(Model):
    """`rewrite: {from: REGEX, to: /REPLACEMENT}`: the path sent upstream becomes `to`
    when the request path matches `from` ($1..$9 are its groups); the query string is
    kept. A path that does not match is sent unchanged."""

    from_: Regex = Field(validation_alias="from")
    to: str

    @field_validator("to")
    @classmethod
    def _to(cls, v: str, info: ValidationInfo) -> str:
        if "%" in v:
            raise ValueError(
                f"write the characters themselves, not %-escapes (nginx escapes the path it "
                f"sends, so %41 would arrive as %2541): {v!r}"
            )
        if not re.fullmatch(r"/(?:[A-Za-z0-9._~!&()*+,=:@/-]|\$[1-9](?![0-9]))*", v):
            raise ValueError(
                "must be a path starting with '/' made of URL path characters and $1..$9 "
                f"(no query string, no other variables), got {v!r}"
            )
        groups = re.compile(info.data["from_"]).groups if "from_" in info.data else 9
        used = [int(n) for n in re.findall(r"\$([1-9])", v)]
        if used and max(used) > groups:
            raise ValueError(f"uses ${max(used)} but 'from' has {groups} group(s)")
        return v


# --- headers ----------------------------------------------------------------------------

# Hop-by-hop and framing headers belong to each connection, not to the message.
_HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
)
# Set by the gateway from the connection itself (templates/location.conf.j2).
_GATEWAY_REQUEST = (
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-request-id",
)
_GATEWAY_RESPONSE = ("x-request-id",)
# nginx writes these itself on every answer: add_header would send a second one, and
# proxy_hide_header cannot take nginx's own away.
_NGINX_RESPONSE = ("server", "date", "content-type")


def _header_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"a header value is text, got {value!r}")
    text = str(value)
    if not text:
        raise ValueError("an empty value: list the header under remove: instead")
    if any(not 0x20 <= ord(c) <= 0x7E for c in text):
        raise ValueError(f"a header value must be printable ASCII: {text!r}")
    if "$" in text:
        raise ValueError(
            f"'$' would make nginx read a variable; a header built from variables needs a "
            f"snippet: {text!r}"
        )
    if len(text) > 4096:
        raise ValueError("a header value must be at most 4096 characters")
    return text


HeaderValue = Annotated[str, BeforeValidator(_header_value)]


class HeaderChanges(Model):
    set: dict[HeaderName, HeaderValue] = {}
    remove: tuple[HeaderName, ...] = ()

    @model_validator(mode="after")
    def _once(self) -> HeaderChanges:
        names = [n.lower() for n in [*self.set, *self.remove]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"a header is named twice (names ignore case): {', '.join(twice)}")
        return self

    def named(self) -> list[str]:
        return [*self.set, *self.remove]


class Headers(Model):
    """`headers: {request: {set, remove}, response: {set, remove}}`. Request changes are
    what the upstream receives; response changes are what the client receives (a set
    response header replaces the upstream's)."""

    request: HeaderChanges = HeaderChanges()
    response: HeaderChanges = HeaderChanges()

    @model_validator(mode="after")
    def _not_the_gateways(self) -> Headers:
        for name in self.request.named():
            low = name.lower()
            if low in _HOP_BY_HOP:
                raise ValueError(f"request header {name} belongs to the connection, not the route")
            if low in _GATEWAY_REQUEST:
                raise ValueError(f"request header {name} is set by the gateway on every request")
        if any(n.lower() == "host" for n in self.request.remove):
            raise ValueError("request header Host cannot be removed (HTTP/1.1 requires it)")
        for name in self.response.named():
            low = name.lower()
            if low in _HOP_BY_HOP:
                raise ValueError(f"response header {name} belongs to the connection, not the route")
            if low in _GATEWAY_RESPONSE:
                raise ValueError(f"response header {name} is set by the gateway on every answer")
            if low in _NGINX_RESPONSE:
                raise ValueError(
                    f"response header {name} is written by nginx itself; a route can neither "
                    "set a second one nor remove it"
                )
        return self

    def response_names(self) -> list[str]:
        return [n.lower() for n in self.response.named()]


# --- CORS -------------------------------------------------------------------------------

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN = re.compile(rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::\d{{1,5}})?$")
# `https://*.example.com[:port]`: one label in place of the `*`, as in a certificate.
_ORIGIN_PATTERN = re.compile(rf"^(https?)://\*((?:\.{_LABEL})+)(:\d{{1,5}})?$")
DEFAULT_CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _origin(value: Any) -> str:
    text = str(value).strip()
    if text == "*":
        return text
    lowered = text.lower()
    if not (_ORIGIN.match(lowered) or _ORIGIN_PATTERN.match(lowered)):
        raise ValueError(
            f"an origin is scheme://host[:port] with no path or trailing slash "
            f"(https://app.example.com), scheme://*.domain[:port] for its subdomains, or '*', "
            f"got {value!r}"
        )
    if _ORIGIN_PATTERN.match(lowered) and lowered.count(".") < 2:
        raise ValueError(f"a wildcard origin needs a domain of two labels or more: {value!r}")
    return lowered


def origin_regex(pattern: str) -> str | None:
    """The PCRE an origin pattern (`https://*.example.com`) means, anchored; None for an
    exact origin. The `*` is one DNS label: `a.example.com`, not `example.com` nor
    `a.b.example.com`. Only these characters can match, so the Origin a client sent may be
    answered back as it came."""
    m = _ORIGIN_PATTERN.match(pattern)
    if m is None:
        return None
    scheme, domain, port = m.group(1), m.group(2), m.group(3) or ""
    # `[.]` rather than `\.`: no backslash for nginx's, crossplane's or gixy's parsers to
    # read three ways (domain and port hold only [a-z0-9.:-]).
    return f"^{scheme}://{_LABEL}{domain.replace('.', '[.]')}{port}$"


Origin = Annotated[str, BeforeValidator(_origin)]


class Cors(Model):
    """CORS answered at the gateway: preflights never reach the upstream; other requests
    from a listed origin get Access-Control-Allow-Origin with that origin."""

    origins: tuple[Origin, ...] = Field(min_length=1)
    methods: Methods | None = None  # default: the route's methods, else DEFAULT_CORS_METHODS
    headers: tuple[HeaderName, ...] = ("Authorization", "Content-Type")  # request headers
    expose_headers: tuple[HeaderName, ...] = ()
    credentials: bool = False
    max_age: Duration = 600.0  # how long a browser may keep a preflight answer

    @field_validator("origins", mode="before")
    @classmethod
    def _one_origin(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, v: float) -> float:
        if v > 86400 or v != int(v):
            raise ValueError(f"must be whole seconds up to 24h (browsers cap it), got {v:g}s")
        return v

    @model_validator(mode="after")
    def _check(self) -> Cors:
        if "*" in self.origins and len(self.origins) > 1:
            raise ValueError("'*' already allows every origin; list origins or '*', not both")
        if "*" in self.origins and self.credentials:
            raise ValueError(
                "credentials: true cannot go with origins '*' (browsers refuse that answer); "
                "list the origins"
            )
        if len(set(self.origins)) != len(self.origins):
            raise ValueError("an origin is listed twice")
        return self


OptionalCors = Annotated[Cors | None, BeforeValidator(off_is_none)]


# --- TLS to the upstream ----------------------------------------------------------------

_DNS_NAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


def _sni(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip().lower().rstrip(".")
    if not _DNS_NAME.match(text) or len(text) > 253:
        raise ValueError(f"must be a DNS name (the name on the backends' certificates): {value!r}")
    return text


def _existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"file not found: {path}")
    return path


ExistingFile = Annotated[SpecPath, AfterValidator(_existing_file)]


class UpstreamTLS(Model):
    """HTTPS (or gRPC over TLS) to the backends. `verify` checks their certificate
    against `ca` for the name `sni`, which is also sent as SNI."""

    verify: bool = True
    ca: ExistingFile | None = None
    sni: Annotated[str | None, BeforeValidator(_sni)] = None
    client_cert: ExistingFile | None = None  # mutual TLS: the gateway's certificate chain
    client_key: ExistingFile | None = None

    @model_validator(mode="after")
    def _check(self) -> UpstreamTLS:
        if self.verify and self.ca is None:
            raise ValueError(
                "verify needs ca: a PEM file of the CAs that sign the backends' certificates "
                "(/etc/ssl/certs/ca-certificates.crt for the system's), or verify: false"
            )
        if self.verify and self.sni is None:
            raise ValueError(
                "verify needs sni: the name on the backends' certificates (nginx would "
                "otherwise check them against the service name)"
            )
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self
