"""`services.NAME.split`: blue-green and canary releases (docs/split.md).

Versions are names from the registry (`meta.version`, a `version=NAME` tag); the weights,
rules, mirror and guard here refer to them. The same validation checks an override that
`nginxgen shift` writes into the registry (registry/shift.py), so a shift cannot put into
force what the spec would refuse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from .fields import Duration, Model

# A version name reaches nginx (as part of an upstream name) and Lua: keep it a plain token.
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
DEFAULT_VERSION = "default"
# Shares are of 100; the Lua side cuts 10,000 buckets, so a share has two decimals at most.
TOTAL = 100
# An nginx variable for the sticky key: `$cookie_session`, `$http_x_user`, `$remote_addr`.
_VARIABLE = re.compile(r"^\$[A-Za-z_][A-Za-z0-9_]*$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_COOKIE_OR_ARG = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_VALUE_MAX = 256


def check_version(name: Any) -> str:
    if not isinstance(name, str) or not VERSION_NAME.match(name):
        raise ValueError(
            f"version {name!r} is not a valid version name (letters, digits, _ . -; "
            "at most 32, starting with a letter or digit)"
        )
    return name


def check_weights(weights: Any) -> dict[str, float]:
    """{version: share} with shares of 100 that add up to exactly 100."""
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"weights must be a mapping of version to share, got {weights!r}")
    out: dict[str, float] = {}
    for name, share in weights.items():
        check_version(name)
        if isinstance(share, bool) or not isinstance(share, (int, float)):
            raise ValueError(f"weight of {name!r} must be a number 0-100, got {share!r}")
        if not 0 <= share <= TOTAL or round(share * 100) != share * 100:
            raise ValueError(
                f"weight of {name!r} must be 0-100 with at most two decimals, got {share!r}"
            )
        out[name] = float(share)
    total = sum(out.values())
    if abs(total - TOTAL) > 1e-9:
        shown = ", ".join(f"{k}={v:g}" for k, v in out.items())
        raise ValueError(f"weights must add up to 100, these add up to {total:g} ({shown})")
    return out


class Rule(Model):
    """First match wins, before the weights."""

    header: str | None = None
    cookie: str | None = None
    query: str | None = None
    equals: str | None = Field(None, max_length=_VALUE_MAX)
    matches: str | None = Field(None, max_length=_VALUE_MAX)
    to: str

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        return check_version(v)

    @model_validator(mode="after")
    def _one_of_each(self) -> Rule:
        sources = [k for k in ("header", "cookie", "query") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError("a rule needs exactly one of header, cookie or query")
        name = getattr(self, sources[0])
        pattern = _HEADER if sources[0] == "header" else _COOKIE_OR_ARG
        if not pattern.match(name):
            raise ValueError(f"{sources[0]} name {name!r} is not a valid {sources[0]} name")
        if (self.equals is None) == (self.matches is None):
            raise ValueError("a rule needs exactly one of equals or matches")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches {self.matches!r} is not a valid regex: {exc}") from None
            # Lua runs it with ngx.re (PCRE); refuse what Python and PCRE read differently.
            if re.search(r"\(\?P[<=>]|\\[AZz]", self.matches):
                raise ValueError(
                    f"matches {self.matches!r} uses Python-only syntax ((?P<..>, \\A, \\Z)"
                )
        return self

    @property
    def source(self) -> tuple[str, str]:
        for kind in ("header", "cookie", "query"):
            value = getattr(self, kind)
            if value is not None:
                return kind, value
        raise AssertionError("validated rule without a source")


class Mirror(Model):
    to: str
    percent: float = Field(100, gt=0, le=100)

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        return check_version(v)


class SplitGuard(Model):
    """Roll the canary back to 0 when its 5xx share over `window` crosses the line."""

    version: str
    max_5xx_percent: float = Field(ge=0, le=100)
    window: Duration = 30.0
    min_requests: int = Field(50, ge=1)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return check_version(v)

    @field_validator("window")
    @classmethod
    def _window(cls, v: float) -> float:
        if not 1 <= v <= 3600:
            raise ValueError(f"window must be 1s-1h, got {v:g}s")
        return v


class Split(Model):
    weights: dict[str, float]
    sticky: str = "none"
    rules: tuple[Rule, ...] = ()
    mirror: Mirror | None = None
    guard: SplitGuard | None = None
    version_from: str = Field("version", pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> dict[str, float]:
        return check_weights(v)

    @field_validator("sticky")
    @classmethod
    def _sticky(cls, v: str) -> str:
        if v != "none" and not _VARIABLE.match(v):
            raise ValueError(
                f"sticky must be one nginx variable ($cookie_session, $http_x_user) "
                f"or none, got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _known_versions(self) -> Split:
        known = set(self.weights)
        for i, rule in enumerate(self.rules):
            if rule.to not in known:
                raise ValueError(f"rules[{i}].to: {rule.to!r} is not one of the weights' versions")
        for what, obj in (("mirror", self.mirror), ("guard", self.guard)):
            name = getattr(obj, "to", None) or getattr(obj, "version", None)
            if obj is not None and name not in known:
                raise ValueError(f"{what}: {name!r} is not one of the weights' versions")
        return self

    @property
    def versions(self) -> tuple[str, ...]:
        """In a fixed order (by name), so that every gateway cuts the same bucket edges."""
        return tuple(sorted(self.weights))
