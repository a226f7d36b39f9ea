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


def _at_least_1ms(seconds: float) -> float:
    if seconds < 0.001:
        raise ValueError("must be at least 1ms")
    return seconds


# Cache lifetimes: a duration, and 0 would store entries that expire at once.
TTL = Annotated[Duration, AfterValidator(_at_least_1ms)]


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
    headers: tuple[str, ...] = ()  # response headers stored besides Content-Type
    max_body: Size = 1024 * 1024
    bypass_credentials: bool = True  # requests with Authorization or Cookie skip the cache
    allow_no_cache: bool = True  # a request's Cache-Control/Pragma no-cache skips it
    host: Token | None = None  # the host in the key; default: nginx.server_name
    use_request_host: bool = False  # key on the client's Host instead (virtual hosting)
    stampede_wait: Duration = 2.0  # how long concurrent misses wait for one fill
    l1: L1Cache | None = None

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in v if not 200 <= s <= 599]
        if bad or not v:
            raise ValueError(f"list HTTP statuses between 200 and 599, got {list(v)}")
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

    @model_validator(mode="after")
    def _check(self) -> CacheSpec:
        if self.l1 is not None and self.l1.ttl > self.ttl:
            raise ValueError(f"l1.ttl {self.l1.ttl:g}s is longer than the cache ttl {self.ttl:g}s")
        return self
