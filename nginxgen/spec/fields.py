"""Field types every part of the spec shares: durations, paths, plain tokens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationInfo,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

DEFAULT_SPEC = "nginxgen.yaml"

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class SpecError(Exception):
    """A spec that cannot be used; str() is the full, user-facing explanation."""


def parse_duration(value: Any) -> float:
    """'250ms', '5s', '1m', '2h' or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration (use e.g. 500ms, 5s, 1m): {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return seconds


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Relative paths in the spec are relative to the spec file, not the cwd."""
    base = (info.context or {}).get("base_dir")
    if value in ("-", "stderr", "off") or base is None or value.startswith("/dev/"):
        return value
    return str((Path(base) / value).resolve())


Duration = Annotated[float, BeforeValidator(parse_duration)]
SpecPath = Annotated[str, AfterValidator(_resolve_path)]
# Values placed in nginx.conf verbatim must be plain tokens.
_TOKEN = re.compile(r"^[A-Za-z0-9_.:/\[\]-]+$")


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"must be a plain token (letters, digits, _ . : / - [ ]): {value!r}")
    return value


Token = Annotated[str, AfterValidator(_token)]


def _service_name(value: str) -> str:
    from ..model.validate import is_safe_name

    if not is_safe_name(value):
        raise ValueError(f"not a valid service name: {value!r}")
    return value


ServiceName = Annotated[str, AfterValidator(_service_name)]


def off_is_none(value: Any) -> Any:
    """`off` (or false) for an optional policy: none here, even if a default has one."""
    return None if value == "off" or value is False else value


def dotted_key(key: tuple[Any, ...]) -> str:
    """("hosts", 0, "tls") → hosts[0].tls, as messages name keys."""
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def keyed(key: tuple[Any, ...], message: str) -> PydanticCustomError:
    """A validation error about `key` (relative to the model that raises it), so that the
    message names that key and its line, not only the model around it."""
    return PydanticCustomError("spec_key", "{message}", {"message": message, "key": key})


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


_LOOPBACK = re.compile(r"^(?:127(?:\.\d{1,3}){3}|localhost|\[::1\]):(\d{1,5})$")


def _loopback_listen(value: Any) -> Any:
    if value == "off":
        return value
    m = _LOOPBACK.match(str(value))
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise ValueError(
            f"must be a loopback address:port (127.0.0.1:9145, [::1]:9145), got {value!r}; "
            "the status server exposes internals and must not face the network"
        )
    return str(value)


LoopbackListen = Annotated[str, BeforeValidator(_loopback_listen)]
