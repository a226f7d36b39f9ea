"""Spec + Catalog + now → Plan: what nginx should do. Pure: no I/O, no clock reads.

Every decision about traffic lives here (which instances serve, with which weight, what a
route does when its service has nobody alive); templates only lay the Plan out.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from .cache import CacheSetup, RouteCache, cache_notes, cache_setup, route_cache
from .catalog import Catalog, Instance
from .gateway import FORWARDING_CLEARED, Gateway, Guard, plan_gateway
from .heap import without_collector
from .plan_memo import ALWAYS, CLOCKLESS, ServiceMemo, Window, intersect, ramp_window
from .spec import NO_BACKUP_METHODS, Failover, ServicePolicy, Spec, Timeouts, balance_args
from .spec.cache import parse_size
from .surface import StreamBlock, Surface, plan_surface, stream_servers
from .warmup import (
    Observed,
    Ramp,
    instance_key,
    ramp,
    ramp_start,
    ramped_weight,
    scale_factor,
)

# States whose instances take new requests. `draining` and `down` get none from the next
# reload on; nginx's graceful reload lets requests already in flight to them finish.
# `starting` says "not ready yet" (Eureka STARTING, a pod before readiness): no traffic
# until it reports `up`; nginxgen then ramps it from that moment (see warmup.Observed).
LIVE_STATES = ("up",)
# Balancing methods that map a key to a server: taking a server out of the list would
# remap other keys, so instances that must not serve stay in as `down` servers.
STABLE_METHODS = ("hash", "ip_hash")

# What a server costs in an upstream's shared-memory zone, measured on nginx 1.22 by
# benchmarks/upstream_zone.py: 0.77 KiB for an IPv4 address, 0.83 KiB for IPv6, 1.03 KiB
# for a 253-character name, on top of nginx's smallest zone (8 pages, 32 KiB), which also
# holds the zone's own bookkeeping. A 64k zone holds ~60 IPv4 servers.
ZONE_BASE = 32 * 1024
ZONE_PER_SERVER = 1056
# Room for twice the servers: a name that resolves to two addresses is two peers, and a
# dynamic-endpoints mode would add servers at run time, without a reload to resize.
ZONE_HEADROOM = 2


@dataclass(frozen=True)
class Server:
    address: str
    weight: int
    max_fails: int
    fail_timeout: float
    instance_id: str
    backup: bool = False
    down: bool = False  # kept in a hash/ip_hash upstream so the mapping stays stable


class _HashedOnce:
    """For frozen values that render and verify look up by value on every pass: the hash
    is computed once per object (a dataclass hashes all its fields on every call), and
    never pickled, since string hashes differ between processes."""

    def _hash_once(self) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))  # type: ignore[arg-type]
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


@dataclass(frozen=True)
class Upstream(_HashedOnce):
    name: str
    servers: tuple[Server, ...]
    keepalive: int
    zone: str | None
    balance: tuple[str, ...] = ()  # the balancing directive; () for round robin
    snippet: str | None = None  # services.NAME.snippets: the spec author's nginx text

    __hash__ = _HashedOnce._hash_once


@dataclass(frozen=True)
class Location(_HashedOnce):
    path: str
    exact: bool
    service: str
    upstream: str | None  # None: nobody alive → deliberate 503
    strip_prefix: bool
    failover: Failover
    timeouts: Timeouts
    client_max_body_size: str | None
    unavailable_body: str = ""
    guard: Guard | None = None  # rate limits, auth, metrics label (gateway.py)
    cache: RouteCache | None = None  # served from Redis by lua/nginxgen/cache.lua
    upstream_host: str | None = None  # the Host (and X-Forwarded-Host) sent; None: $host
    cleared_headers: tuple[str, ...] = FORWARDING_CLEARED  # request headers never sent upstream
    server: int = 0  # the host whose server block holds it (Surface.servers[].index)
    regex: bool = False  # `location ~ path`
    websocket: bool = False  # Upgrade passed through (the $nginxgen_connection map)
    streaming: bool = False  # unbuffered, uncompressed
    grpc: bool = False  # grpc_pass; "nobody alive" is a gRPC UNAVAILABLE
    hsts_var: str | None = None  # repeated where a location's own add_header drops the server's
    snippet: str | None = None  # routes[].snippets: the spec author's nginx text, last

    __hash__ = _HashedOnce._hash_once


@dataclass(frozen=True)
class Plan:
    upstreams: tuple[Upstream, ...]
    locations: tuple[Location, ...]
    catch_all: bool  # add `location /` answering 404, because no route covers '/'
    notes: tuple[str, ...] = ()  # decisions worth telling the operator about
    catalog_fingerprint: str = ""
    spec_path: str = ""
    services_seen: int = 0
    instances_seen: int = 0
    dropped: tuple[str, ...] = field(default=())
    gateway: Gateway = Gateway()
    cache: CacheSetup | None = None  # set when a route with an upstream caches
    # Next warm-up step boundary: the watch loop re-plans then, even with no registry event.
    next_change_at: datetime | None = None
    surface: Surface = Surface()  # server blocks, listeners, TLS, streams (surface.py)

    @property
    def server_count(self) -> int:
        return sum(len(u.servers) for u in self.upstreams)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


@without_collector
def make_plan(
    spec: Spec,
    catalog: Catalog,
    now: datetime | None = None,
    observed: Observed | None = None,
) -> Plan:
    """Decide upstreams and locations.

    `now` places warm-up ramps (None: no ramp at all); `observed` carries what nginxgen saw
    over time (first-seen and return times, pseudo-dead instances) as plain data.
    Services whose inputs did not change since an earlier plan reuse its result
    (plan_memo.py), so one changed instance among 10,000 services re-plans one service.
    """
    observed = observed or Observed()
    notes: list[str] = []
    refused: list[str] = []
    changes: list[datetime] = []
    upstreams: dict[str, Upstream] = {}
    with _SERVICES.lock:
        fixed = _spec_plan(spec)
        notes += fixed.notes
        _SERVICES.sync(observed)
        for name in fixed.service_names:
            instances = catalog.services.get(name)
            if instances is None:
                notes.append(f"service {name!r}: not in the registry; its routes answer 503")
                continue
            policy = fixed.policy(name)
            planned = _SERVICES.get(name, instances, policy, fixed.zone, now)
            if planned is None:
                planned, window, keys = _plan_service(
                    name, instances, policy, fixed.zone, now, observed
                )
                _SERVICES.put(name, instances, policy, fixed.zone, window, keys, planned)
            if planned.notes:
                notes += planned.notes
            if planned.refused:
                refused += planned.refused
            if planned.changes:
                changes += planned.changes
            if planned.upstream is None:
                notes.append(f"service {name!r}: no live instance; its routes answer 503")
                continue
            upstreams[name] = planned.upstream
        http = {n: upstreams[n] for n in fixed.http_names if n in upstreams}
        locations, cache = fixed.locations(http.keys())
        surface = fixed.surface
        if spec.streams:
            # Stream upstreams have their own namespace and no keepalive or snippets.
            stream_ups = tuple(
                replace(upstreams[n], keepalive=0, snippet=None)
                for n in spec.stream_service_names
                if n in upstreams
            )
            block = StreamBlock(
                upstreams=stream_ups,
                servers=stream_servers(spec, frozenset(u.name for u in stream_ups)),
                snippet=spec.snippets.stream.text if spec.snippets.stream else None,
            )
            surface = replace(surface, stream=block)

    return Plan(
        upstreams=tuple(http.values()),
        locations=locations,
        catch_all=fixed.catch_all,
        notes=tuple(notes),
        catalog_fingerprint=catalog.fingerprint(),
        spec_path=spec.source_path,
        services_seen=len(catalog.services),
        instances_seen=catalog.instance_count,
        dropped=tuple(str(d) for d in catalog.dropped) + tuple(refused),
        gateway=fixed.gateway,
        cache=cache,
        next_change_at=min(changes, default=None),
        surface=surface,
    )


def next_change_at(
    spec: Spec, catalog: Catalog, now: datetime, observed: Observed | None = None
) -> datetime | None:
    """When the plan changes with no registry event: the next step of any warm-up ramp."""
    return make_plan(spec, catalog, now, observed).next_change_at


@dataclass(frozen=True)
class _Planned:
    """One service's share of a Plan."""

    upstream: Upstream | None  # None: nobody to serve
    notes: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    changes: tuple[datetime, ...] = ()  # when its warm-up ramps take their next step


_SERVICES: ServiceMemo[_Planned] = ServiceMemo()


class _SpecPlan:
    """What a Spec alone decides, worked out once per Spec object (specs are frozen):
    policies, the gateway, and each route's Location with and without an upstream."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec  # held, so the identity check in _spec_plan stays sound
        self.service_names = spec.service_names
        self.http_names = frozenset(spec.http_service_names)
        self.surface = plan_surface(spec)
        # Every host's routes in one list, the default host's first: their index is the
        # one the gateway's guards and the cache use.
        self.routes = [(i, r) for i, vh in enumerate(spec.virtual_hosts) for r in vh.routes]
        self.zone = None if spec.nginx.upstream_zone == "off" else spec.nginx.upstream_zone
        self.gateway, self.guards = plan_gateway(spec)
        self.catch_all = not any(r.path == "/" and r.match == "prefix" for r in spec.routes)
        self.notes = cache_notes(spec)
        self._default: ServicePolicy | None = None
        n = len(self.routes)
        self._serving: list[Location | None] = [None] * n
        self._unavailable: list[Location | None] = [None] * n
        self._last: tuple[frozenset[str], tuple[Location, ...], CacheSetup | None] | None = None

    def policy(self, name: str) -> ServicePolicy:
        own = self.spec.services.get(name)
        if own is not None:
            return own
        if self._default is None:  # one object for all, so the memo compares by identity
            self._default = self.spec.service_policy(name)
        return self._default

    def locations(self, live: Collection[str]) -> tuple[tuple[Location, ...], CacheSetup | None]:
        """Every route's Location for this set of services with an upstream."""
        if self._last is not None and self._last[0] == live:
            return self._last[1], self._last[2]
        out = []
        for i, (_, r) in enumerate(self.routes):
            serving = r.service in live
            variants = self._serving if serving else self._unavailable
            loc = variants[i]
            if loc is None:
                loc = variants[i] = self._location(i, serving)
            out.append(loc)
        locations = tuple(out)
        cache = cache_setup(self.spec, tuple(loc.cache for loc in locations if loc.cache))
        self._last = (frozenset(live), locations, cache)
        return locations, cache

    def _location(self, i: int, serving: bool) -> Location:
        host, r = self.routes[i]
        guard = self.guards[i]
        # A route answering 503 on purpose has nothing worth caching.
        cache = route_cache(self.spec, i, r, guard) if serving else None
        sent = {f.name.lower() for f in guard.forward}  # set from the auth answer instead
        cleared = FORWARDING_CLEARED + (cache.stripped if cache else ())
        if sent:
            cleared = tuple(h for h in cleared if h.lower() not in sent)
        return Location(
            path=r.path,
            exact=r.exact,
            service=r.service,
            upstream=r.service if serving else None,
            strip_prefix=r.strip_prefix,
            failover=r.failover,
            timeouts=r.timeouts,
            client_max_body_size=r.client_max_body_size,
            unavailable_body=json.dumps(
                {"error": "service unavailable", "service": r.service}, separators=(",", ":")
            ),
            guard=guard,
            cache=cache,
            upstream_host=cache.key_host if cache else None,
            cleared_headers=cleared,
            server=host,
            regex=r.match == "regex",
            websocket=r.websocket,
            streaming=r.streaming,
            grpc=r.protocol == "grpc",
            hsts_var=self.surface.hsts_var(host),
            snippet=r.snippets.text if r.snippets else None,
        )


_SPECS: dict[int, _SpecPlan] = {}
_SPECS_MAX = 8


def forget_plans() -> None:
    """Drop what make_plan remembers (memory, or a cold measurement)."""
    with _SERVICES.lock:
        _SERVICES.clear()
        _SPECS.clear()


def _spec_plan(spec: Spec) -> _SpecPlan:
    fixed = _SPECS.get(id(spec))
    if fixed is None or fixed.spec is not spec:
        if len(_SPECS) >= _SPECS_MAX:
            del _SPECS[next(iter(_SPECS))]  # the oldest
        fixed = _SPECS[id(spec)] = _SpecPlan(spec)
    return fixed


def _plan_service(
    name: str,
    instances: tuple[Instance, ...],
    policy: ServicePolicy,
    zone: str | None,  # the configured minimum (nginx.upstream_zone), None when off
    now: datetime | None,
    observed: Observed,
) -> tuple[_Planned, Window, list[str]]:
    """One service's upstream, notes, refusals and ramp steps; plus the times `now` at
    which that result holds and the observed-state keys it read (for plan_memo)."""
    notes: list[str] = []
    refused: list[str] = []
    balance = balance_args(policy.balance)
    method = balance[0] if balance else "round_robin"
    keys = [instance_key(i) for i in instances]
    up = [(i, k) for i, k in zip(instances, keys, strict=True) if i.state in LIVE_STATES]
    dead = {k for _, k in up} & observed.dead
    if dead and len(dead) == len(up):
        # Probe evidence alone never takes a whole service down: passive checks still run.
        notes.append(
            f"service {name!r}: every instance fails its health probe; keeping them all in"
        )
        dead = set()
    serving = [i for i, k in up if k not in dead]
    held_out = [i for i in instances if i not in serving] if method in STABLE_METHODS else []

    chosen: dict[str, tuple[Instance, bool]] = {}  # address -> (instance, down)
    for inst, down in [(i, False) for i in serving] + [(i, True) for i in held_out]:
        # Two registry entries for one address would make nginx count it twice.
        address = inst.address
        if address in chosen:
            continue
        if method in NO_BACKUP_METHODS and _is_backup(inst):
            if not down:
                refused.append(
                    f"service {name!r} instance {inst.id!r}: backup instances cannot be used "
                    f"with balance {policy.balance!r} (nginx refuses them); left out — use "
                    "round_robin or least_conn, or remove the backup tag"
                )
            continue
        chosen[address] = (inst, down)
    backups = {a for a, (i, _) in chosen.items() if _is_backup(i)}
    primaries = [(a, i) for a, (i, down) in chosen.items() if not down and a not in backups]
    if not primaries:
        # nothing to serve (only backups would still render, but never serve)
        return _Planned(None, tuple(notes), tuple(refused)), ALWAYS, keys

    ramps: dict[str, Ramp] = {}
    windows: list[Window] = []
    if now is not None:
        for address, i in primaries:
            start = ramp_start(i, now, observed)
            step = ramps[address] = ramp(policy.warmup, start, now)
            if policy.warmup.enabled and start is not None:
                windows.append(ramp_window(step, start, now, policy.warmup.period))
    elif policy.warmup.enabled and any(_has_age(i, observed) for _, i in primaries):
        windows.append(CLOCKLESS)  # with a clock these would ramp (and notes would differ)
    ramping = {a: r for a, r in ramps.items() if r.ramping}
    if ramping and len(ramping) == len(primaries):
        notes.append(
            f"service {name!r}: every instance is new (full redeploy); "
            "all start at full weight, no warm-up"
        )
        ramping = {}
    factor = 1
    changes: list[datetime] = []
    if ramping:
        base_max = max(i.weight for i, _ in chosen.values())
        factor = scale_factor(policy.warmup.step_percent, base_max)
        changes = [r.next_at for r in ramping.values() if r.next_at is not None]

    servers = []
    for address, (inst, down) in chosen.items():
        r = ramping.get(address)
        weight = ramped_weight(inst.weight, r.fraction if r else 1.0, factor)
        if r:
            notes.append(
                f"service {name!r} instance {inst.id!r}: warming up, step {r.step} of "
                f"{r.steps} ({round(r.fraction * 100)}% of its weight)"
            )
        servers.append(
            Server(
                address=address,
                weight=weight,
                max_fails=policy.health.max_fails,
                fail_timeout=policy.health.fail_timeout,
                instance_id=inst.id,
                backup=address in backups,
                down=down,
            )
        )
    upstream = Upstream(
        name=name,
        servers=tuple(servers),
        keepalive=policy.keepalive,
        zone=upstream_zone(zone, len(servers)),
        balance=balance,
        snippet=policy.snippets.text if policy.snippets else None,
    )
    planned = _Planned(upstream, tuple(notes), tuple(refused), tuple(changes))
    return planned, intersect(windows), keys


def _has_age(inst: Instance, observed: Observed) -> bool:
    """Whether a clock would give this instance a ramp start (see warmup.ramp_start)."""
    key = instance_key(inst)
    return inst.registered_at is not None or key in observed.first_seen or key in observed.returned


def zone_size(minimum: int, servers: int) -> int:
    """Bytes of upstream zone for `servers` server lines: `minimum` when that holds them
    with the headroom, else the next power of two that does (so a zone changes size only
    when its upstream doubles, not on every reload that adds a server)."""
    need = ZONE_BASE + ZONE_HEADROOM * servers * ZONE_PER_SERVER
    return minimum if need <= minimum else 1 << (need - 1).bit_length()


def upstream_zone(minimum: str | None, servers: int) -> str | None:
    """The `zone` size to write for an upstream; None when zones are off."""
    if minimum is None:
        return None
    floor = parse_size(minimum)
    size = zone_size(floor, servers)
    if size == floor:
        return minimum  # as the operator wrote it
    return f"{size >> 20}m" if size % (1 << 20) == 0 else f"{-(-size // 1024)}k"


def _is_backup(inst: Instance) -> bool:
    return "backup" in inst.tags or (bool(inst.meta) and inst.meta_dict.get("backup") == "true")
