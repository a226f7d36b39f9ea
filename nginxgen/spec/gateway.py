"""Gateway policies on routes: rate limits, authentication (docs in README)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator

from .fields import Model, SpecPath, Token, off_is_none

_RATE = re.compile(r"^([1-9]\d{0,6})r/(s|m)$")
# HTTP header names nginx exposes as $http_*: letters, digits and '-' (nginx ignores
# headers with '_' by default, so a spec naming one would silently never match).
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_AUTH_URL = re.compile(
    r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:/[A-Za-z0-9._~!&()*+,=:@%/-]*)?$"
)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def _header_name(value: str) -> str:
    if not _HEADER.match(value):
        raise ValueError(f"not an HTTP header name (letters, digits and '-'): {value!r}")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


class RateLimit(Model):
    rate: str  # 100r/s or 600r/m
    burst: int = Field(0, ge=0)
    # true: a burst is served at once and the excess refused; false: the burst is queued
    # and released at `rate` (nginx's default), which adds latency instead of 429s.
    nodelay: bool = True
    key: str = "client_ip"  # client_ip | api_key | header:<Name>
    zone_size: Token = "10m"  # shared memory per zone; 1m holds ~16k client addresses

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        if not _RATE.match(str(v)):
            raise ValueError(f"rate must look like 100r/s or 600r/m, got {v!r}")
        return v

    @field_validator("zone_size")
    @classmethod
    def _zone_size(cls, v: str) -> str:
        if not re.fullmatch(r"[1-9]\d{0,5}[km]", v):
            raise ValueError(f"zone_size must look like 512k or 10m, got {v!r}")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if v in ("client_ip", "api_key"):
            return v
        if v.startswith("header:") and _HEADER.match(v[len("header:") :]):
            return v
        raise ValueError(f"key must be client_ip, api_key or header:<Header-Name>, got {v!r}")

    @property
    def per_second(self) -> float:
        m = _RATE.match(self.rate)
        assert m is not None
        return int(m.group(1)) / (1.0 if m.group(2) == "s" else 60.0)


# `rate_limit: off` on a route opts it out of a limit set in `defaults`.
OptionalRateLimit = Annotated[RateLimit | None, BeforeValidator(off_is_none)]


def _positive(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


OptionalLimitConn = Annotated[int | None, BeforeValidator(off_is_none), AfterValidator(_positive)]


class ApiKeys(Model):
    header: HeaderName = "X-Api-Key"
    file: SpecPath  # one key per line; `sha256:<hex>` lines hold a key's digest instead
    _digests: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _read_keys(self) -> ApiKeys:
        self._digests = read_key_digests(self.file)
        return self

    @property
    def digests(self) -> tuple[str, ...]:
        """sha256 hex digests of the accepted keys; the keys themselves are not kept."""
        return self._digests


def read_key_digests(path: str) -> tuple[str, ...]:
    """Keys file → sha256 digests. Errors name the line, never the key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the API keys file {path} is not UTF-8 text") from None
    digests: dict[str, None] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("sha256:"):
            digest = line[len("sha256:") :].lower()
            if not _SHA256_HEX.match(digest):
                raise ValueError(f"{path}:{n}: sha256: must be followed by 64 hex digits")
        elif any(c.isspace() or not c.isprintable() or not c.isascii() for c in line):
            raise ValueError(f"{path}:{n}: a key must be printable ASCII without spaces")
        else:
            digest = hashlib.sha256(line.encode()).hexdigest()
        digests[digest] = None
    if not digests:
        raise ValueError(f"the API keys file {path} holds no keys")
    return tuple(digests)


class Auth(Model):
    api_keys: ApiKeys | None = None
    url: str | None = None  # auth_request: 2xx allows, 401/403 go back to the client
    forward_headers: tuple[HeaderName, ...] = ()  # from the auth response to the upstream

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not _AUTH_URL.match(v):
            raise ValueError(f"url must be http(s)://host[:port][/path], got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Auth:
        if (self.api_keys is None) == (self.url is None):
            raise ValueError("set exactly one of api_keys or url")
        if self.forward_headers and self.url is None:
            raise ValueError("forward_headers needs url (headers come from the auth response)")
        return self
