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
# Per-service digests are summed modulo 2**256 (ServiceDigests): the sum fits a sha256.
_MODULUS = 1 << 256


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
    # What is worth saying but refuses nothing (a service renamed to an nginx-safe name).
    notes: tuple[str, ...] = ()

    @property
    def instance_count(self) -> int:
        services = self.services
        if isinstance(services, ServiceMap):
            return services.instance_count
        return sum(len(v) for v in services.values())

    def fingerprint(self, digests: ServiceDigests | None = None) -> str:
        """Stable hash of the content (not of when or how it was read).

        `digests` remembers each service's hash between calls, so a catalog where one
        instance changed among 10,000 services hashes one service again.
        """
        memo = digests if digests is not None else ServiceDigests()
        h = hashlib.sha256(memo.combined(self.services))
        for name in sorted(self.splits):
            h.update(f"split\0{name}\0{self.splits[name]}\0".encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:16]


def instance_key(inst: Instance) -> str:
    """Identity for warm-up and probe state: an id that comes back elsewhere is new."""
    return f"{inst.service}/{inst.id}@{inst.address}"


class ServiceMap(dict[str, tuple[Instance, ...]]):
    """A catalog's services that know which names changed since the map they were made
    from (`derive`): each stage that remembers the last map it saw looks at those names
    only (`changed_since`), instead of visiting 10,000 services to find one. A source that
    reads incrementally makes them (sources/etcd.py); a plain dict means "unknown" and
    every stage walks it whole. Never changed once made, like any catalog's services."""

    __slots__ = ("base", "changed", "instance_count")

    base: ServiceMap | None
    changed: frozenset[str]
    instance_count: int


# How many maps back `changed_since` can see: reads a debounce window swallows are links of
# the chain too; older maps are let go (a stage that last saw one walks everything once).
LINEAGE_DEPTH = 32


def derive(
    base: Mapping[str, tuple[Instance, ...]] | None,
    services: Mapping[str, tuple[Instance, ...]],
    changed: set[str] | frozenset[str],
) -> ServiceMap:
    """A copy of `services`, which differ from `base` in `changed` names at most (added,
    removed, or another tuple of instances); the others must be `base`'s very tuples."""
    out = ServiceMap(services)
    out.changed = frozenset(changed)
    if isinstance(base, ServiceMap):
        out.base = base
        count = base.instance_count
        count -= sum(len(base[n]) for n in changed if n in base)
        out.instance_count = count + sum(len(out[n]) for n in changed if n in out)
        node, depth = base, 1
        while node.base is not None:  # let the oldest go
            depth += 1
            if depth >= LINEAGE_DEPTH:
                node.base = None
                break
            node = node.base
    else:
        out.base = None
        out.instance_count = sum(len(v) for v in out.values())
    return out


def changed_since(
    services: Mapping[str, tuple[Instance, ...]],
    last: Mapping[str, tuple[Instance, ...]] | None,
) -> set[str] | None:
    """The names whose instances may differ between `last` and `services` (in either, or
    another tuple), or None when that is not known cheaply: then compare them all."""
    if last is None:
        return None
    if services is last:
        return set()
    names: set[str] = set()
    node: Mapping[str, tuple[Instance, ...]] | None = services
    while isinstance(node, ServiceMap):
        names |= node.changed
        node = node.base
        if node is last:
            return names
    return None


class ServiceDigests:
    """Per-service digests of the last catalogs seen (see Catalog.fingerprint). Bounded;
    the owner (a BuildCache, a polling source) keeps one for as long as it reads.

    The services' digests are combined by addition modulo 2**256 (order does not matter),
    so a catalog whose map says what changed since the last one (ServiceMap) costs its
    changed services only: their old digests out of the sum, their new ones in."""

    def __init__(self, max_services: int = 200_000) -> None:
        self.max_services = max_services
        self._known: dict[str, tuple[tuple[Instance, ...], bytes]] = {}
        self._last: Mapping[str, tuple[Instance, ...]] | None = None  # of the last sum
        self._sum = 0

    def combined(self, services: Mapping[str, tuple[Instance, ...]]) -> bytes:
        """Every service's digest, combined (32 bytes)."""
        last = self._last
        changed = changed_since(services, last)
        if changed is None or last is None:
            total = sum(int.from_bytes(self._of(n, i), "big") for n, i in services.items())
        else:
            total = self._sum
            for name in changed:
                if name in last:
                    total -= int.from_bytes(self._of(name, last[name]), "big")
                if name in services:
                    total += int.from_bytes(self._of(name, services[name]), "big")
        self._sum, self._last = total % _MODULUS, services
        return self._sum.to_bytes(32, "big")

    def _of(self, name: str, instances: tuple[Instance, ...]) -> bytes:
        entry = self._known.get(name)
        if entry is not None and entry[0] is instances:
            return entry[1]
        return self.digest(name, instances)

    def digest(self, name: str, instances: tuple[Instance, ...]) -> bytes:
        known = self._known.get(name)
        if known is not None and known[0] == instances:
            return known[1]
        h = hashlib.sha256(name.encode("utf-8", "surrogatepass"))
        for inst in sorted(instances, key=lambda i: i.id):
            h.update(repr(inst).encode("utf-8", "surrogatepass"))
        digest = h.digest()
        if len(self._known) >= self.max_services:
            self._known.clear()  # the sum stays right: a digest is made again when needed
        self._known[name] = (instances, digest)
        return digest
