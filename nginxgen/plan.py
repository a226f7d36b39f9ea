"""Spec + Catalog + now → Plan: what nginx should do. Pure: no I/O, no clock reads.

Every decision about traffic lives here (which instances serve, with which weight, what a
route does when its service has nobody alive); templates only lay the Plan out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from .catalog import Catalog, Instance
from .spec import Failover, Spec, Timeouts

# States whose instances take new requests. `draining` and `down` get none from the next
# reload on; nginx's graceful reload lets requests already in flight to them finish.
LIVE_STATES = ("up", "starting")


@dataclass(frozen=True)
class Server:
    address: str
    weight: int
    max_fails: int
    fail_timeout: float
    instance_id: str
    backup: bool = False


@dataclass(frozen=True)
class Upstream:
    name: str
    servers: tuple[Server, ...]
    keepalive: int
    zone: str | None


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

    @property
    def server_count(self) -> int:
        return sum(len(u.servers) for u in self.upstreams)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


def make_plan(spec: Spec, catalog: Catalog, now: datetime | None = None) -> Plan:
    """Decide upstreams and locations. `now` is reserved for time-based policies."""
    notes: list[str] = []
    upstreams: dict[str, Upstream] = {}
    for name in spec.service_names:
        instances = catalog.services.get(name)
        if instances is None:
            notes.append(f"service {name!r}: not in the registry; its routes answer 503")
            continue
        upstream = _upstream(spec, name, instances)
        if upstream is None:
            notes.append(f"service {name!r}: no live instance; its routes answer 503")
            continue
        upstreams[name] = upstream

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
        )
        for r in spec.routes
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
        dropped=tuple(str(d) for d in catalog.dropped),
    )


def _upstream(spec: Spec, name: str, instances: tuple[Instance, ...]) -> Upstream | None:
    policy = spec.service_policy(name)
    live = [i for i in instances if i.state in LIVE_STATES]
    servers: dict[str, Server] = {}
    for inst in live:
        # Two registry entries for one address would make nginx count it twice.
        if inst.address in servers:
            continue
        servers[inst.address] = Server(
            address=inst.address,
            weight=inst.weight,
            max_fails=policy.health.max_fails,
            fail_timeout=policy.health.fail_timeout,
            instance_id=inst.id,
            backup="backup" in inst.tags or inst.meta_dict.get("backup") == "true",
        )
    if not any(not s.backup for s in servers.values()):
        return None  # nothing to serve (only backups would still render, but never serve)
    zone = None if spec.nginx.upstream_zone == "off" else spec.nginx.upstream_zone
    return Upstream(
        name=name,
        servers=tuple(servers.values()),
        keepalive=policy.keepalive,
        zone=zone,
    )


def next_change_at(spec: Spec, catalog: Catalog, now: datetime) -> datetime | None:
    """When the plan for this catalog will change by itself (a warm-up step falls due).

    `watch` wakes at that time even if the registry is quiet. None: nothing time-based.
    """
    return None
