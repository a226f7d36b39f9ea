"""The trust boundary: raw registry entries in, valid Instances (or reasons) out.

Every registry adapter hands raw entries to `CatalogBuilder.add`; anything that is not a
valid name, host, port or weight is dropped here with a reason, so nothing downstream ever
sees text that could become nginx syntax. A value that cannot even be converted
(infinite, out of range, of the wrong type) is a bad value like any other: it drops its
instance, never the read. Tags and metadata never reach nginx, so a bad one is left out
alone and its instance kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import reprlib
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from .catalog import MAX_WEIGHT, STATES, Catalog, Dropped, Instance

# Every pattern is used with fullmatch: `$` would also match before a trailing newline.
# nginx upstream names and Lua keys: letters, digits, '_', '.', '-'; must start alnum.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# RFC 1123 host names, each label 1-63 chars, no leading/trailing hyphen.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# Tags and metadata are informational; they never reach the config, but keep them printable.
_PRINTABLE = re.compile(r"[\x20-\x7e]{0,256}")
_PRINTABLE_RULE = "printable ASCII text of at most 256 characters"
# str.isdigit() and int() also take '٨٠', '８０' and '²'; ports are ASCII digits.
_PORT = re.compile(r"[0-9]{1,5}")
# Whatever an adapter or a validator raises while converting one entry's values.
CONVERSION_ERRORS = (ValueError, TypeError, ArithmeticError)


class InvalidEntry(ValueError):
    """A registry entry that cannot be trusted; the message says why."""


def safe_name(name: str) -> str:
    """Map a registry service name to an nginx-safe identifier, deterministically.

    Safe names pass unchanged. Others have every unsafe character replaced by '_' and a
    short hash of the original appended, so two different names never collide.
    """
    if _SAFE_NAME.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100].lstrip("_.-") or "svc"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}_{digest}"


def is_safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.fullmatch(name))


def valid_host(host: Any) -> str:
    """Return the canonical host (IP or DNS name) or raise InvalidEntry."""
    if not isinstance(host, str) or not host:
        raise InvalidEntry(f"host must be a non-empty string, got {shown(host)}")
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise InvalidEntry(f"IPv6 scope ids are not supported: {shown(host)}")
        return str(ip)
    name = candidate[:-1] if candidate.endswith(".") else candidate
    if len(name) > 253 or not all(_LABEL.fullmatch(part) for part in name.split(".")):
        raise InvalidEntry(f"not an IP address or DNS name: {shown(host)}")
    if name.replace(".", "").isdigit():
        raise InvalidEntry(f"not an IP address or DNS name: {shown(host)}")
    return name.lower()


def valid_port(port: Any) -> int:
    if isinstance(port, str) and _PORT.fullmatch(port):
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool):
        if isinstance(port, str) and port.isascii() and port.isdigit():
            raise InvalidEntry(f"port out of range 1-65535: {shown(port)}")
        raise InvalidEntry(f"port is not a number: {shown(port)}")
    if not 1 <= port <= 65535:
        raise InvalidEntry(f"port out of range 1-65535: {shown(port)}")
    return port


def split_address(address: Any) -> tuple[str, int]:
    """'host:port', 'ip:port' or '[ipv6]:port' → (host, port)."""
    if not isinstance(address, str) or not address:
        raise InvalidEntry(f"address must be a 'host:port' string, got {shown(address)}")
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise InvalidEntry(f"address must be '[ipv6]:port', got {shown(address)}")
        return valid_host(address[1:end]), valid_port(address[end + 2 :])
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:
        raise InvalidEntry(f"address must be 'host:port', got {shown(address)}")
    return valid_host(host), valid_port(port)


def valid_weight(weight: Any) -> int:
    """Registries give ints, floats (Nacos) or numeric strings; nginx wants 1..1000 ints.

    Finite weights beyond the range are clamped; an infinite one (`.inf`, `1e999`) is
    not a weight. Integers are compared as integers: a 400-digit one has no float.
    """
    if weight is None:
        return 1
    if isinstance(weight, int) and not isinstance(weight, bool):
        if weight <= 0:
            raise InvalidEntry(f"weight must be > 0, got {shown(weight)}")
        return min(MAX_WEIGHT, weight)
    value: float
    if isinstance(weight, float):
        value = weight
    elif isinstance(weight, str) and weight.isascii():
        try:
            value = float(weight)
        except ValueError:
            raise InvalidEntry(f"weight is not a number: {shown(weight)}") from None
    else:
        raise InvalidEntry(f"weight is not a number: {shown(weight)}")
    if not math.isfinite(value):
        raise InvalidEntry(f"weight must be a finite number, got {shown(weight)}")
    if value <= 0:
        raise InvalidEntry(f"weight must be > 0, got {shown(weight)}")
    return max(1, min(MAX_WEIGHT, round(value)))


def valid_state(state: Any) -> str:
    if state is None:
        return "up"
    if not isinstance(state, str) or state.lower() not in STATES:
        raise InvalidEntry(f"state must be one of {', '.join(STATES)}, got {shown(state)}")
    return state.lower()


def valid_time(value: Any) -> datetime | None:
    """ISO 8601 string, datetime, or epoch seconds/milliseconds → aware UTC datetime."""
    if value is None or value == "":
        return None
    bad = InvalidEntry(f"registered_at is not a valid time: {shown(value)}")
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = value / 1000 if value > 1e11 else value  # epoch ms (Eureka) vs s
            dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise bad from None
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEntry(f"registered_at is not an ISO 8601 time: {shown(value)}") from None
    else:
        raise InvalidEntry(f"registered_at is not a time: {shown(value)}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        # 9999-12-31T23:00-23:00 parses, but lies beyond datetime's range in UTC.
        return dt.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        raise bad from None


def valid_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**256:
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidEntry(f"instance id must be a non-empty string, got {shown(value)}")
    if not _PRINTABLE.fullmatch(value) or any(c in value for c in ";{}$\"'\\#`"):
        raise InvalidEntry(f"instance id has characters that are not allowed: {shown(value)}")
    return value


Notes = list[tuple[str, str]]  # (field, reason) for informational values left out


def _tags(values: Any, notes: Notes) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, (list, tuple)):
        notes.append(("tags", f"left out: not a list of strings ({shown(values)})"))
        return ()
    kept = [v for v in values if isinstance(v, str) and _PRINTABLE.fullmatch(v)]
    if len(kept) < len(values):
        bad = [v for v in values if not (isinstance(v, str) and _PRINTABLE.fullmatch(v))]
        notes.append(("tags", f"left out {_some(bad)} (each must be {_PRINTABLE_RULE})"))
    return tuple(kept)


def _meta(values: Any, notes: Notes) -> tuple[tuple[str, str], ...]:
    if values is None:
        return ()
    if not isinstance(values, Mapping):
        notes.append(("meta", f"left out: not a mapping ({shown(values)})"))
        return ()
    out, bad = [], []
    for k, v in values.items():
        text = _meta_text(v)
        if isinstance(k, str) and _PRINTABLE.fullmatch(k) and text is not None:
            out.append((k, text))
        else:
            bad.append(k)
    if bad:
        notes.append(("meta", f"left out {_some(bad)} (keys and values must be {_PRINTABLE_RULE})"))
    return tuple(sorted(out))


def _meta_text(value: Any) -> str | None:
    """A metadata value as text (registries send numbers and booleans too); None if unfit."""
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, (int, float)):
        value = repr(value) if isinstance(value, float) or abs(value) < 10**256 else None
    return value if isinstance(value, str) and _PRINTABLE.fullmatch(value) else None


def make_instance(
    service: str,
    *,
    id: Any,
    host: Any = None,
    port: Any = None,
    address: Any = None,
    weight: Any = None,
    state: Any = None,
    registered_at: Any = None,
    tags: Any = None,
    meta: Any = None,
    notes: Notes | None = None,
) -> Instance:
    """Validate one raw registry entry. Raises InvalidEntry with the reason.

    Bad tags or metadata entries are left out; `notes` (when given) receives why.
    """
    if address is not None:
        h, p = split_address(address)
    else:
        h, p = valid_host(host), valid_port(port)
    return Instance(
        id=valid_id(id),
        service=service,
        host=h,
        port=p,
        weight=valid_weight(weight),
        state=valid_state(state),
        registered_at=valid_time(registered_at),
        tags=_tags(tags, [] if notes is None else notes),
        meta=_meta(meta, [] if notes is None else notes),
    )


class CatalogBuilder:
    """Collects validated instances and dropped entries from one registry read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._services: dict[str, dict[str, Instance]] = {}
        self._names: dict[str, str] = {}  # safe name -> original registry name
        self._dropped: list[Dropped] = []
        self._notes: list[str] = []
        self._splits: dict[str, str] = {}

    def split(self, service: str, text: str) -> None:
        """A split override for `service` (raw text; checked against the spec at plan)."""
        self._splits[service] = text

    def service(self, raw_name: str) -> str | None:
        """Declare a service (it exists even with zero instances). Returns its safe name."""
        if not isinstance(raw_name, str) or not raw_name:
            self.drop(shown(raw_name), "-", "service name must be a non-empty string")
            return None
        name = safe_name(raw_name)
        if name != raw_name and name not in self._names:
            # Nothing is refused: its instances serve under the new name.
            self._notes.append(
                f"service {label(raw_name)!r} renamed to {name!r} (the name is not nginx-safe)"
            )
        self._services.setdefault(name, {})
        self._names[name] = raw_name
        return name

    def add(self, raw_service: str, **fields: Any) -> Instance | None:
        """Validate and add one instance; on failure record why and return None."""
        name = self.service(raw_service)
        if name is None:
            return None
        raw_id = fields.get("id")
        notes: Notes = []
        try:
            inst = make_instance(name, **fields, notes=notes)
        except InvalidEntry as exc:
            self.drop(raw_service, raw_id, str(exc))
            return None
        except CONVERSION_ERRORS as exc:  # a shape no validator foresaw: still one entry
            self.drop(raw_service, raw_id, f"malformed entry: {type(exc).__name__}: {exc}")
            return None
        if inst.id in self._services[name]:
            self.drop(raw_service, inst.id, "duplicate instance id; keeping the first")
            return None
        for what, why in notes:
            self.drop(raw_service, inst.id, f"{why}; instance kept", field=what)
        self._services[name][inst.id] = inst
        return inst

    def drop(self, service: Any, instance: Any, reason: str, field: str = "") -> None:
        """Record a refused entry, or an informational field left out."""
        self._dropped.append(Dropped(label(service), label(instance), _cut(reason, 500), field))

    def build(self, version: str = "") -> Catalog:
        services = {
            name: tuple(sorted(insts.values(), key=lambda i: i.id))
            for name, insts in sorted(self._services.items())
        }
        return Catalog(
            services,
            tuple(self._dropped),
            self.source,
            version,
            splits=dict(self._splits),
            notes=tuple(self._notes),
        )


def label(value: Any) -> str:
    """Printable form of an untrusted name or id for messages (never raw control chars)."""
    if not isinstance(value, str):
        return shown(value)
    return _cut(value[:200].encode("unicode_escape").decode("ascii"))


def shown(value: Any, limit: int = 80) -> str:
    """An untrusted value as a message shows it: a short repr (escaped), cut to `limit`.

    reprlib stops after a few items and levels: the full repr of a list reached through
    YAML aliases can be gigabytes.
    """
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int beyond 4300 digits has no repr
        text = f"<{type(value).__name__} too large to show>"
    return _cut(text, limit)


def _short_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 4, 4, 4, 4
    r.maxstring, r.maxother, r.maxlong = 100, 100, 40
    return r


_REPR = _short_repr()


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _some(values: list[Any]) -> str:
    """'a', 'b', 'c' and 2 more."""
    more = f" and {len(values) - 3} more" if len(values) > 3 else ""
    return ", ".join(shown(v, 40) for v in values[:3]) + more
