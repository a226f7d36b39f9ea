"""Catalog: an immutable snapshot of services and their instances from one registry read.

This module is the trust boundary. Every registry adapter hands raw entries to
`make_instance`; anything that is not a valid name, host, port or weight is dropped
here with a reason, so nothing downstream ever sees text that could become nginx syntax.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

STATES = ("up", "starting", "draining", "down")

# nginx upstream names and Lua keys: letters, digits, '_', '.', '-'; must start alnum.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# RFC 1123 host names, each label 1-63 chars, no leading/trailing hyphen.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Tags and metadata are informational; they never reach the config, but keep them printable.
_PRINTABLE = re.compile(r"^[\x20-\x7e]{0,256}$")
MAX_WEIGHT = 1000


class InvalidEntry(ValueError):
    """A registry entry that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class Instance:
    id: str
    service: str
    host: str
    port: int
    weight: int = 1
    state: str = "up"
    registered_at: datetime | None = None
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()

    def __eq__(self, other: object) -> bool:
        # Compared by the tens of thousands on every pass (the plan and digest memos):
        # one dict comparison in C instead of two 9-tuples built per call.
        if other.__class__ is self.__class__:
            return self.__dict__ == other.__dict__
        return NotImplemented

    @property
    def address(self) -> str:
        """host:port as nginx wants it (IPv6 in brackets)."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def meta_dict(self) -> dict[str, str]:
        return dict(self.meta)


@dataclass(frozen=True)
class Dropped:
    """A registry entry that was refused, and why (shown to the operator)."""

    service: str
    instance: str
    reason: str

    def __str__(self) -> str:
        return f"service {self.service!r} instance {self.instance!r}: {self.reason}"


@dataclass(frozen=True)
class Catalog:
    services: Mapping[str, tuple[Instance, ...]]
    dropped: tuple[Dropped, ...] = ()
    source: str = ""
    # Registry-specific position (Consul index, etcd revision, file hash) for change waits.
    version: str = ""
    read_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def instance_count(self) -> int:
        return sum(len(v) for v in self.services.values())

    def fingerprint(self) -> str:
        """Stable hash of the content (not of when or how it was read)."""
        h = hashlib.sha256()
        for name in sorted(self.services):
            h.update(_service_digest(name, self.services[name]))
        return h.hexdigest()[:16]


# Per-service digests of the last catalogs seen: a read where one instance changed among
# 10,000 services hashes one service again. Bounded; a race only recomputes a digest.
_DIGESTS: dict[str, tuple[tuple[Instance, ...], bytes]] = {}
_DIGESTS_MAX = 200_000


def _service_digest(name: str, instances: tuple[Instance, ...]) -> bytes:
    known = _DIGESTS.get(name)
    if known is not None and known[0] == instances:
        return known[1]
    h = hashlib.sha256(name.encode("utf-8", "surrogatepass"))
    for inst in sorted(instances, key=lambda i: i.id):
        h.update(repr(inst).encode("utf-8", "surrogatepass"))
    digest = h.digest()
    if len(_DIGESTS) >= _DIGESTS_MAX:
        _DIGESTS.clear()
    _DIGESTS[name] = (instances, digest)
    return digest


def safe_name(name: str) -> str:
    """Map a registry service name to an nginx-safe identifier, deterministically.

    Safe names pass unchanged. Others have every unsafe character replaced by '_' and a
    short hash of the original appended, so two different names never collide.
    """
    if _SAFE_NAME.match(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100].lstrip("_.-") or "svc"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}_{digest}"


def is_safe_name(name: str) -> bool:
    return bool(_SAFE_NAME.match(name))


def valid_host(host: str) -> str:
    """Return the canonical host (IP or DNS name) or raise InvalidEntry."""
    if not isinstance(host, str) or not host:
        raise InvalidEntry("empty host")
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            raise InvalidEntry(f"IPv6 scope ids are not supported: {host!r}")
        return str(ip)
    name = candidate[:-1] if candidate.endswith(".") else candidate
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise InvalidEntry(f"not an IP address or DNS name: {host!r}")
    if name.replace(".", "").isdigit():
        raise InvalidEntry(f"not an IP address or DNS name: {host!r}")
    return name.lower()


def valid_port(port: Any) -> int:
    if isinstance(port, bool):
        raise InvalidEntry(f"port is not a number: {port!r}")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int):
        raise InvalidEntry(f"port is not a number: {port!r}")
    if not 1 <= port <= 65535:
        raise InvalidEntry(f"port out of range 1-65535: {port}")
    return port


def split_address(address: Any) -> tuple[str, int]:
    """'host:port', 'ip:port' or '[ipv6]:port' → (host, port)."""
    if not isinstance(address, str) or not address:
        raise InvalidEntry(f"address must be a 'host:port' string, got {address!r}")
    if address.startswith("["):
        end = address.find("]")
        if end < 0 or address[end + 1 : end + 2] != ":":
            raise InvalidEntry(f"address must be '[ipv6]:port', got {address!r}")
        return valid_host(address[1:end]), valid_port(address[end + 2 :])
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:
        raise InvalidEntry(f"address must be 'host:port', got {address!r}")
    return valid_host(host), valid_port(port)


def valid_weight(weight: Any) -> int:
    """Registries give ints, floats (Nacos) or numeric strings; nginx wants 1..1000 ints."""
    if weight is None:
        return 1
    if isinstance(weight, bool):
        raise InvalidEntry(f"weight is not a number: {weight!r}")
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise InvalidEntry(f"weight is not a number: {weight!r}") from None
    if value != value or value <= 0:  # NaN or non-positive
        raise InvalidEntry(f"weight must be > 0, got {weight!r}")
    return max(1, min(MAX_WEIGHT, round(value)))


def valid_state(state: Any) -> str:
    if state is None:
        return "up"
    if not isinstance(state, str) or state.lower() not in STATES:
        raise InvalidEntry(f"state must be one of {', '.join(STATES)}, got {state!r}")
    return state.lower()


def valid_time(value: Any) -> datetime | None:
    """ISO 8601 string, datetime, or epoch seconds/milliseconds → aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch ms (Eureka) vs s
        try:
            dt = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise InvalidEntry(f"registered_at is not a valid time: {value!r}") from None
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEntry(f"registered_at is not an ISO 8601 time: {value!r}") from None
    else:
        raise InvalidEntry(f"registered_at is not a time: {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def valid_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise InvalidEntry(f"instance id must be a non-empty string, got {value!r}")
    if not _PRINTABLE.match(value) or any(c in value for c in ";{}$\"'\\#`"):
        raise InvalidEntry(f"instance id has characters that are not allowed: {value!r}")
    return value


def _strings(values: Any, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, (list, tuple)):
        raise InvalidEntry(f"{what} must be a list of strings, got {values!r}")
    out = []
    for v in values:
        if not isinstance(v, str) or not _PRINTABLE.match(v):
            raise InvalidEntry(f"{what} entry is not a printable string: {v!r}")
        out.append(v)
    return tuple(out)


def _meta(values: Any) -> tuple[tuple[str, str], ...]:
    if values is None:
        return ()
    if not isinstance(values, Mapping):
        raise InvalidEntry(f"meta must be a mapping, got {values!r}")
    out = []
    for k, v in values.items():
        if isinstance(v, (int, float, bool)):
            v = str(v).lower() if isinstance(v, bool) else str(v)
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidEntry(f"meta {k!r} must map strings to strings")
        if not _PRINTABLE.match(k) or not _PRINTABLE.match(v):
            raise InvalidEntry(f"meta {k!r} has non-printable text")
        out.append((k, v))
    return tuple(sorted(out))


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
) -> Instance:
    """Validate one raw registry entry. Raises InvalidEntry with the reason."""
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
        tags=_strings(tags, "tags"),
        meta=_meta(meta),
    )


class CatalogBuilder:
    """Collects validated instances and dropped entries from one registry read."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._services: dict[str, dict[str, Instance]] = {}
        self._names: dict[str, str] = {}  # safe name -> original registry name
        self._dropped: list[Dropped] = []

    def service(self, raw_name: str) -> str | None:
        """Declare a service (it exists even with zero instances). Returns its safe name."""
        if not isinstance(raw_name, str) or not raw_name:
            self.drop(repr(raw_name), "-", "service name must be a non-empty string")
            return None
        name = safe_name(raw_name)
        if name != raw_name and name not in self._names:
            self.drop(raw_name, "-", f"service name is not nginx-safe; renamed to {name!r}")
        self._services.setdefault(name, {})
        self._names[name] = raw_name
        return name

    def add(self, raw_service: str, **fields: Any) -> Instance | None:
        """Validate and add one instance; on failure record why and return None."""
        name = self.service(raw_service)
        if name is None:
            return None
        label = fields.get("id")
        try:
            inst = make_instance(name, **fields)
        except InvalidEntry as exc:
            self.drop(raw_service, _label(label), str(exc))
            return None
        except TypeError as exc:  # unexpected field shape from an adapter
            self.drop(raw_service, _label(label), f"malformed entry: {exc}")
            return None
        if inst.id in self._services[name]:
            self.drop(raw_service, inst.id, "duplicate instance id; keeping the first")
            return None
        self._services[name][inst.id] = inst
        return inst

    def drop(self, service: str, instance: str, reason: str) -> None:
        """Record a refused (or renamed) entry for the operator."""
        self._dropped.append(Dropped(_label(service), instance, reason))

    def build(self, version: str = "") -> Catalog:
        services = {
            name: tuple(sorted(insts.values(), key=lambda i: i.id))
            for name, insts in sorted(self._services.items())
        }
        return Catalog(services, tuple(self._dropped), self.source, version)


def _label(value: Any) -> str:
    """Printable form of an untrusted value for messages (never raw control chars)."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."
