"""Spec + Catalog + now → Plan: what nginx should do. Pure: no I/O, no clock reads.

Every decision about traffic lives here (which instances serve, with which weight, what a
route does when its service has nobody alive); templates only lay the Plan out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from .cache import CacheSetup, RouteCache, cache_setup, route_cache
from .catalog import Catalog, Instance
from .gateway import Gateway, Guard, plan_gateway
from .spec import NO_BACKUP_METHODS, Failover, Spec, Timeouts, balance_args
from .warmup import Observed, instance_key, ramp, ramp_start, ramped_weight, scale_factor

# States whose instances take new requests. `draining` and `down` get none from the next
# reload on; nginx's graceful reload lets requests already in flight to them finish.
# `starting` says "not ready yet" (Eureka STARTING, a pod before readiness): no traffic
# until it reports `up`; nginxgen then ramps it from that moment (see warmup.Observed).
LIVE_STATES = ("up",)
# Balancing methods that map a key to a server: taking a server out of the list would
# remap other keys, so instances that must not serve stay in as `down` servers.
STABLE_METHODS = ("hash", "ip_hash")


@dataclass(frozen=True)
class Server:
    address: str
    weight: int
    max_fails: int
    fail_timeout: float
    instance_id: str
    backup: bool = False
    down: bool = False  # kept in a hash/ip_hash upstream so the mapping stays stable


@dataclass(frozen=True)
class Upstream:
    name: str
    servers: tuple[Server, ...]
    keepalive: int
    zone: str | None
    balance: tuple[str, ...] = ()  # the balancing directive; () for round robin


@dataclass(frozen=True)
class Location:
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

    @property
    def server_count(self) -> int:
        return sum(len(u.servers) for u in self.upstreams)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


def make_plan(
    spec: Spec,
    catalog: Catalog,
    now: datetime | None = None,
    observed: Observed | None = None,
) -> Plan:
    """Decide upstreams and locations.

    `now` places warm-up ramps (None: no ramp at all); `observed` carries what nginxgen saw
    over time (first-seen and return times, pseudo-dead instances) as plain data.
    """
    observed = observed or Observed()
    notes: list[str] = []
    refused: list[str] = []
    changes: list[datetime] = []
    upstreams: dict[str, Upstream] = {}
    for name in spec.service_names:
        instances = catalog.services.get(name)
        if instances is None:
            notes.append(f"service {name!r}: not in the registry; its routes answer 503")
            continue
        upstream = _upstream(spec, name, instances, now, observed, notes, refused, changes)
        if upstream is None:
            notes.append(f"service {name!r}: no live instance; its routes answer 503")
            continue
        upstreams[name] = upstream

    gateway, guards = plan_gateway(spec)
    locations = tuple(
        Location(
            path=r.path,
            exact=r.exact,
            service=r.service,
            upstream=r.service if r.service in upstreams else None,
            strip_prefix=r.strip_prefix,
            failover=r.failover,
            timeouts=r.timeouts,
            client_max_body_size=r.client_max_body_size,
            unavailable_body=json.dumps(
                {"error": "service unavailable", "service": r.service}, separators=(",", ":")
            ),
            guard=guard,
            # A route answering 503 on purpose has nothing worth caching.
            cache=route_cache(spec, i, r) if r.service in upstreams else None,
        )
        for i, (r, guard) in enumerate(zip(spec.routes, guards, strict=True))
    )
    return Plan(
        upstreams=tuple(upstreams.values()),
        locations=locations,
        catch_all=not any(r.path == "/" and not r.exact for r in spec.routes),
        notes=tuple(notes),
        catalog_fingerprint=catalog.fingerprint(),
        spec_path=spec.source_path,
        services_seen=len(catalog.services),
        instances_seen=catalog.instance_count,
        dropped=tuple(str(d) for d in catalog.dropped) + tuple(refused),
        gateway=gateway,
        cache=cache_setup(spec, tuple(loc.cache for loc in locations if loc.cache)),
        next_change_at=min(changes, default=None),
    )


def next_change_at(
    spec: Spec, catalog: Catalog, now: datetime, observed: Observed | None = None
) -> datetime | None:
    """When the plan changes with no registry event: the next step of any warm-up ramp."""
    return make_plan(spec, catalog, now, observed).next_change_at


def _upstream(
    spec: Spec,
    name: str,
    instances: tuple[Instance, ...],
    now: datetime | None,
    observed: Observed,
    notes: list[str],
    refused: list[str],
    changes: list[datetime],
) -> Upstream | None:
    policy = spec.service_policy(name)
    balance = balance_args(policy.balance)
    method = balance[0] if balance else "round_robin"
    up = [i for i in instances if i.state in LIVE_STATES]
    dead = {instance_key(i) for i in up} & observed.dead
    if dead and len(dead) == len(up):
        # Probe evidence alone never takes a whole service down: passive checks still run.
        notes.append(
            f"service {name!r}: every instance fails its health probe; keeping them all in"
        )
        dead = set()
    serving = [i for i in up if instance_key(i) not in dead]
    held_out = [i for i in instances if i not in serving] if method in STABLE_METHODS else []

    chosen: dict[str, tuple[Instance, bool]] = {}  # address -> (instance, down)
    for inst, down in [(i, False) for i in serving] + [(i, True) for i in held_out]:
        # Two registry entries for one address would make nginx count it twice.
        if inst.address in chosen:
            continue
        if _is_backup(inst) and method in NO_BACKUP_METHODS:
            if not down:
                refused.append(
                    f"service {name!r} instance {inst.id!r}: backup instances cannot be used "
                    f"with balance {policy.balance!r} (nginx refuses them); left out — use "
                    "round_robin or least_conn, or remove the backup tag"
                )
            continue
        chosen[inst.address] = (inst, down)
    primaries = [i for i, down in chosen.values() if not down and not _is_backup(i)]
    if not primaries:
        return None  # nothing to serve (only backups would still render, but never serve)

    ramps = {
        i.address: ramp(policy.warmup, ramp_start(i, now, observed), now)
        for i in primaries
        if now is not None
    }
    ramping = {a: r for a, r in ramps.items() if r.ramping}
    if ramping and len(ramping) == len(primaries):
        notes.append(
            f"service {name!r}: every instance is new (full redeploy); "
            "all start at full weight, no warm-up"
        )
        ramping = {}
    factor = 1
    if ramping:
        base_max = max(i.weight for i, _ in chosen.values())
        factor = scale_factor(policy.warmup.step_percent, base_max)
        changes += [r.next_at for r in ramping.values() if r.next_at is not None]

    servers = []
    for inst, down in chosen.values():
        r = ramping.get(inst.address)
        weight = ramped_weight(inst.weight, r.fraction if r else 1.0, factor)
        if r:
            notes.append(
                f"service {name!r} instance {inst.id!r}: warming up, step {r.step} of "
                f"{r.steps} ({round(r.fraction * 100)}% of its weight)"
            )
        servers.append(
            Server(
                address=inst.address,
                weight=weight,
                max_fails=policy.health.max_fails,
                fail_timeout=policy.health.fail_timeout,
                instance_id=inst.id,
                backup=_is_backup(inst),
                down=down,
            )
        )
    zone = None if spec.nginx.upstream_zone == "off" else spec.nginx.upstream_zone
    return Upstream(
        name=name,
        servers=tuple(servers),
        keepalive=policy.keepalive,
        zone=zone,
        balance=balance,
    )


def _is_backup(inst: Instance) -> bool:
    return "backup" in inst.tags or inst.meta_dict.get("backup") == "true"
