"""Catalog: an immutable snapshot of services and their instances from one registry read.

Only `validate.CatalogBuilder` makes one from registry data (the trust boundary), so every
Instance here holds a valid name, host, port and weight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

STATES = ("up", "starting", "draining", "down")
# States whose instances take new requests. `draining` and `down` get none from the next
# reload on; nginx's graceful reload lets requests already in flight to them finish.
# `starting` says "not ready yet" (Eureka STARTING, a pod before readiness): no traffic
# until it reports `up`; nginxgen then ramps it from that moment (see model.observed).
LIVE_STATES = ("up",)
MAX_WEIGHT = 1000


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
    """A registry entry that was refused, and why (shown to the operator).

    With `field` set, only that informational field (or some of its entries) was left
    out and the instance was kept.
    """

    service: str
    instance: str
    reason: str
    field: str = ""

    def __str__(self) -> str:
        where = f"service {self.service!r} instance {self.instance!r}"
        return f"{where} {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


@dataclass(frozen=True)
class Catalog:
    services: Mapping[str, tuple[Instance, ...]]
    dropped: tuple[Dropped, ...] = ()
    source: str = ""
    # Registry-specific position (Consul index, etcd revision, file hash) for change waits.
    version: str = ""
    read_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    # Split overrides `nginxgen shift` wrote into the registry: service -> raw JSON text,
    # checked against the spec when planned (registry/shift.py, plan/split.py).
    splits: Mapping[str, str] = field(default_factory=dict)

    @property
    def instance_count(self) -> int:
        return sum(len(v) for v in self.services.values())

    def fingerprint(self, digests: ServiceDigests | None = None) -> str:
        """Stable hash of the content (not of when or how it was read).

        `digests` remembers each service's hash between calls, so a catalog where one
        instance changed among 10,000 services hashes one service again.
        """
        memo = digests if digests is not None else ServiceDigests()
        h = hashlib.sha256()
        h.update(b"".join(memo.digests(self.services)))
        for name in sorted(self.splits):
            h.update(f"split\0{name}\0{self.splits[name]}\0".encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:16]


def instance_key(inst: Instance) -> str:
    """Identity for warm-up and probe state: an id that comes back elsewhere is new."""
    return f"{inst.service}/{inst.id}@{inst.address}"


class ServiceDigests:
    """Per-service digests of the last catalogs seen (see Catalog.fingerprint). Bounded;
    the owner (a BuildCache, a polling source) keeps one for as long as it reads."""

    def __init__(self, max_services: int = 200_000) -> None:
        self.max_services = max_services
        self._known: dict[str, tuple[tuple[Instance, ...], bytes]] = {}
        self._order: list[str] = []  # the sorted names of the last `digests`

    def digests(self, services: Mapping[str, tuple[Instance, ...]]) -> list[bytes]:
        """Every service's digest, in name order. A service whose instances are the very
        tuple of the last call costs one identity check; the names are sorted again only
        when they are not the (sorted) names of the last call."""
        names = list(services)
        if names != self._order:
            names.sort()
            self._order = names
        known, out = self._known, []
        for name in names:
            instances = services[name]
            entry = known.get(name)
            out.append(entry[1] if entry is not None and entry[0] is instances else
                       self.digest(name, instances))  # fmt: skip
        return out

    def digest(self, name: str, instances: tuple[Instance, ...]) -> bytes:
        known = self._known.get(name)
        if known is not None and known[0] == instances:
            return known[1]
        h = hashlib.sha256(name.encode("utf-8", "surrogatepass"))
        for inst in sorted(instances, key=lambda i: i.id):
            h.update(repr(inst).encode("utf-8", "surrogatepass"))
        digest = h.digest()
        if len(self._known) >= self.max_services:
            self._known.clear()
        self._known[name] = (instances, digest)
        return digest
