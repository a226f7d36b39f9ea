"""`redis:` and a route's `cache:` — the Redis cache answered inside nginx."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator

from .fields import Duration, Model, SpecPath, Token
from .gateway import HeaderName

_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def parse_size(value: Any) -> int:
    """'512k', '1m' or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value.strip())):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"not a size (use e.g. 512k, 1m): {value!r}")
    if size < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


MAX_TTL = 365 * 86400.0  # seconds; see _ttl


def _ttl(seconds: float) -> float:
    # 0 would store entries that expire at once. The top bound keeps the milliseconds Lua
    # sends to Redis (PX) an exact integer far below what Redis refuses (~2^63 - now): a
    # year is already longer than any answer should be served without asking the backend.
    if seconds < 0.001:
        raise ValueError("must be at least 1ms")
    if seconds > MAX_TTL:
        raise ValueError(f"must be at most 365d, got {_seconds(seconds)}")
    return seconds


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 1e15 else f"{seconds:.3g}s"


TTL = Annotated[Duration, AfterValidator(_ttl)]

# Request headers that tell an application to act on another URL, method or host than
# the request line and Host say. The key does not cover them, so a cached route never
# sends them upstream unless `key_headers` names one (then it is keyed and passed).
UNKEYED_OVERRIDE_HEADERS = (
    "X-Original-URL",
    "X-Original-URI",
    "X-Rewrite-URL",
    "X-Original-Host",
    "X-Host",
    "X-HTTP-Host-Override",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
)
# Key headers that cannot be: the gateway sets, clears or handles these itself.
_NOT_KEY_HEADERS = {
    "host": "use cache.use_request_host to key on the client's Host",
    "authorization": "see cache.bypass_credentials",
    "cookie": "see cache.bypass_credentials",
    "x-request-id": "it differs on every request, so nothing would ever hit",
    "x-real-ip": "the gateway sets it",
    "forwarded": "the gateway clears it",
    "content-length": "a request with a body bypasses the cache",
    "transfer-encoding": "a request with a body bypasses the cache",
}


class RedisSpec(Model):
    """Where the cache lives. The password never enters nginx.conf: only the name of the
    environment variable that holds it, read by Lua when a connection is opened."""

    host: Token = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    socket: SpecPath | None = None  # a unix socket path; replaces host/port when set
    db: int = Field(0, ge=0, le=1_000_000)
    password_env: str | None = None
    connect_timeout: Duration = 0.1
    read_timeout: Duration = 0.2
    pool_size: int = Field(32, ge=1, le=100_000)  # idle connections kept per worker
    idle_timeout: Duration = 60.0
    key_prefix: str = "nginxgen:cache:"
    # Fail open: after this many errors in a row Redis is skipped for `cooldown`.
    errors_to_skip: int = Field(3, ge=1)
    cooldown: Duration = 5.0

    @field_validator("connect_timeout", "read_timeout")
    @classmethod
    def _short_timeout(cls, v: float) -> float:
        # A bare number is seconds, as everywhere in the spec; 100 here is a typo for 100ms.
        if not 0.001 <= v <= 10:
            raise ValueError(f"must be between 1ms and 10s (write e.g. 100ms), got {v:g}s")
        return v

    @field_validator("password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(
                f"must be the NAME of an environment variable (not the password): {v!r}"
            )
        return v

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:/-]{0,64}", v):
            raise ValueError(f"use up to 64 letters, digits and _ . : / - : {v!r}")
        return v

    @field_validator("socket")
    @classmethod
    def _socket(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9_./-]+", v):
            raise ValueError(f"must be an absolute path of plain characters: {v!r}")
        return v


class L1Cache(Model):
    """A per-route shared dict in front of Redis for the hottest keys."""

    ttl: TTL = 1.0
    size: Token = "10m"

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if not re.fullmatch(r"\d+[kKmM]?", v) or parse_size(v) < 12 * 1024:
            raise ValueError(f"must be a size of at least 12k (e.g. 10m): {v!r}")
        return v


class CacheSpec(Model):
    ttl: TTL
    statuses: tuple[int, ...] = (200,)
    headers: tuple[str, ...] = ()  # obsolete: every response header is stored (see plan note)
    max_body: Size = 1024 * 1024
    bypass_credentials: bool = True  # requests with Authorization or Cookie skip the cache
    # bypass_credentials: false shares one answer among requests with any credentials;
    # that is only accepted when the spec says so in words.
    shared_for_credentials: bool = False
    # Key on the identity the gateway forwards (auth forward_headers, the API key's
    # consumer); None: yes when the route has one.
    vary_on_identity: bool | None = None
    key_headers: tuple[HeaderName, ...] = ()  # request headers keyed on and passed upstream
    allow_no_cache: bool = True  # a request's Cache-Control/Pragma no-cache skips it
    host: Token | None = None  # the host in the key and sent upstream; default server_name
    use_request_host: bool = False  # key on the client's Host instead (virtual hosting)
    stampede_wait: Duration = 2.0  # how long misses wait for one fill, from its start
    l1: L1Cache | None = None

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in v if not 200 <= s <= 599]
        if bad or not v:
            raise ValueError(f"list HTTP statuses between 200 and 599, got {list(v)}")
        partial = [s for s in v if s in (206, 304)]
        if partial:
            raise ValueError(
                f"{partial} answer one client's Range or conditional request and are never stored"
            )
        return v

    @field_validator("stampede_wait")
    @classmethod
    def _stampede_wait(cls, v: float) -> float:
        if v > 60:
            raise ValueError(
                f"must be at most 60s (a wait longer than that is an outage), got {v:g}s"
            )
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [h for h in v if not _HEADER_NAME.match(h)]
        if bad:
            raise ValueError(f"not header names: {bad}")
        never = [h for h in v if h.lower() in ("set-cookie", "content-length", "x-cache")]
        if never:
            raise ValueError(f"these headers are never stored: {never}")
        return v

    @field_validator("key_headers")
    @classmethod
    def _key_headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            low = name.lower()
            why = _NOT_KEY_HEADERS.get(low)
            if why is None and low.startswith("x-forwarded-"):
                why = "the gateway sets or clears every X-Forwarded-* header"
            if why:
                raise ValueError(f"{name} cannot be a key header: {why}")
        lowered = [h.lower() for h in v]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"a header is listed twice: {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> CacheSpec:
        if self.l1 is not None and self.l1.ttl > self.ttl:
            raise ValueError(f"l1.ttl {self.l1.ttl:g}s is longer than the cache ttl {self.ttl:g}s")
        if not self.bypass_credentials and not self.shared_for_credentials:
            raise ValueError(
                "bypass_credentials: false serves one stored answer to every request with "
                "the same key, whatever Authorization or Cookie it carries (or none); "
                "say so with shared_for_credentials: true"
            )
        if self.shared_for_credentials and self.bypass_credentials:
            raise ValueError(
                "shared_for_credentials: true only applies with bypass_credentials: false"
            )
        if self.host is not None and self.use_request_host:
            raise ValueError("set host or use_request_host, not both")
        return self


def identity_problem(cache: CacheSpec, forwarded: tuple[str, ...], api_keys: bool) -> str | None:
    """Why a route's cache and its auth cannot go together (None: they can).

    `forwarded`: headers the auth service's answer sends upstream; `api_keys`: the route
    checks API keys (the key itself is removed before the upstream, so the backend cannot
    tell consumers apart and sharing across them is safe when asked for)."""
    if cache.vary_on_identity is False and forwarded:
        return (
            f"cache.vary_on_identity: false would serve one user's answer to another, because "
            f"the upstream is told who the user is ({', '.join(forwarded)} from auth); remove "
            "it so that the cache keys on that identity"
        )
    if cache.vary_on_identity and not (forwarded or api_keys):
        return (
            "cache.vary_on_identity: true needs an identity to key on: auth.forward_headers "
            "or auth.api_keys on the same route"
        )
    return None
