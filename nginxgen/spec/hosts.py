"""`hosts:` — virtual hosts: names, certificate, policies and routes of each.

Every host is served on every plain listener, and on every TLS listener when it has a
certificate (chosen by SNI). Top-level `routes` are the default host: they answer Host
names no host claims, as they did before hosts existed. Without a default host, an
unknown name gets 404 (421 under TLS) and is never proxied.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic.functional_validators import BeforeValidator

from .fields import Duration, Model, Token, keyed, off_is_none
from .gateway import Auth, OptionalLimitConn, OptionalRateLimit
from .http import ExistingFile, OptionalCors
from .policies import Failover, Timeouts
from .routes import Route, check_unique_paths
from .snippets import ServerSnippet, Snippet

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_EXACT = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_WILDCARD = re.compile(rf"^\*\.{_LABEL}(?:\.{_LABEL})*$")


def _server_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a server name is text, got {value!r}")
    text = value.strip().lower().removesuffix(".")
    if text == "_":
        raise ValueError(
            "'_' is not a name: put routes that should answer every name at the top level"
        )
    try:
        return ipaddress.IPv4Address(text).compressed
    except ValueError:
        pass
    if len(text) > 253 or not (_EXACT.match(text) or _WILDCARD.match(text)):
        raise ValueError(
            f"a server name is a host name (api.example.com) or a wildcard over one "
            f"(*.example.com), got {value!r}"
        )
    return text


ServerName = Annotated[str, BeforeValidator(_server_name)]

# Mozilla's configuration generator: two years.
HSTS_MAX_AGE = 63_072_000
_YEAR = 31_536_000


def _hsts(value: Any) -> Any:
    if value is True:
        return {}
    return None if value in (False, "off") else value


class Hsts(Model):
    max_age: Duration = float(HSTS_MAX_AGE)
    include_subdomains: bool = False
    preload: bool = False

    @model_validator(mode="after")
    def _check(self) -> Hsts:
        if self.max_age != int(self.max_age):
            raise ValueError("max_age must be whole seconds")
        if self.preload and (not self.include_subdomains or self.max_age < _YEAR):
            raise ValueError(
                "preload needs include_subdomains: true and max_age of at least a year "
                "(the preload list's rules)"
            )
        return self


class HostTLS(Model):
    cert: ExistingFile  # PEM: the leaf certificate first, then its intermediates
    key: ExistingFile  # PEM, unencrypted
    hsts: Annotated[Hsts | None, BeforeValidator(_hsts)] = None  # `true`: Mozilla's default
    ocsp_stapling: bool = False  # needs nginx.resolver and a certificate that names a responder


# Keys a host may set for all of its routes; a route's own value wins, key by key.
HOST_ROUTE_KEYS = (
    "failover",
    "timeouts",
    "rate_limit",
    "limit_conn",
    "auth",
    "client_max_body_size",
    "cors",
)


class HostPolicies(Model):
    """What a host's routes inherit (validated alone, so a bad one is reported once)."""

    failover: Failover | None = None
    timeouts: Timeouts | None = None
    rate_limit: OptionalRateLimit = None
    limit_conn: OptionalLimitConn = None
    auth: Annotated[Auth | None, BeforeValidator(off_is_none)] = None
    client_max_body_size: Token | None = None
    cors: OptionalCors = None


class Host(HostPolicies):
    server_names: tuple[ServerName, ...] = Field(min_length=1)
    tls: HostTLS | None = None
    routes: tuple[Route, ...] = Field(min_length=1)
    snippets: ServerSnippet | None = None  # inside this host's server {}

    @field_validator("server_names", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("server_names")
    @classmethod
    def _names_once(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({n for n in v if v.count(n) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} is listed twice")
        return v

    @field_validator("routes")
    @classmethod
    def _unique_paths(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        return check_unique_paths(routes)

    @model_validator(mode="after")
    def _hsts_once(self) -> Host:
        if self.tls is not None and self.tls.hsts is not None:
            for i, r in enumerate(self.routes):
                if r.headers and "strict-transport-security" in r.headers.response_names():
                    raise keyed(
                        ("routes", i, "headers"),
                        "Strict-Transport-Security is set by the host's tls.hsts",
                    )
        return self


@dataclass(frozen=True)
class VirtualHost:
    """A host as the planner sees it: the spec's, or the default one from top-level routes."""

    server_names: tuple[str, ...]
    routes: tuple[Route, ...]
    tls: HostTLS | None
    snippets: Snippet | None
    default: bool  # answers Host names that no other host claims
    key: tuple[str | int, ...]  # where it is in the spec: ("hosts", 2), or () at top level

    def route_key(self, i: int) -> tuple[str | int, ...]:
        return (*self.key, "routes", i)


def name_owner(names: dict[str, str], name: str, owner: str) -> None:
    """Record that `owner` serves `name`; refuse a name claimed twice."""
    other = names.get(name)
    if other is not None:
        raise ValueError(f"{other} and {owner} both claim the server name {name}")
    names[name] = owner
