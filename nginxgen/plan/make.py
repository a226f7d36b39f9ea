"""Spec + Catalog + now → Plan: what nginx should do. Pure: no I/O, no clock reads.

Every decision about traffic lives in this package (which instances serve, with which
weight, what a route does when its service has nobody alive); templates only lay the
Plan out. `make_plan` puts together what the spec alone decides (`SpecPlan`, once per
spec) and each service's upstream (`service.plan_service`, reused through the memo).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from datetime import datetime

from ..model.catalog import Catalog, ServiceDigests
from ..model.names import FORWARDING_CLEARED, NOBODY_PAGE
from ..model.observed import Observed
from ..model.plan import CacheSetup, FeedSetup, Location, Plan, Revision, Standing, Upstream
from ..model.route_http import RouteHttp
from ..model.surface import GRPC_500, HostServer, RoutePage, StreamBlock, Surface
from ..spec import ServicePolicy, Spec, balance_args
from ..util.heap import without_collector
from .aggregate import aggregate_locations, image_fit_locations, plan_bff
from .cache import cache_notes, cache_setup, route_cache
from .endpoints import hash_variable, peer_refusals
from .gateway import plan_gateway
from .last_pass import LastPass, dead_note, keep_nonempty, missing_note, plan_one
from .memo import ALWAYS, ServiceMemo
from .route_http import plan_route_http, with_cleared
from .service import Planned
from .split import SplitPlan, plan_versions, version_upstream
from .surface import plan_surface, stream_servers


class PlanMemo:
    """Everything `make_plan` may reuse from earlier plans: each service's result (valid
    while its inputs stay equal, see memo.py), what each recent spec alone decides, and the
    catalog's per-service digests. One per BuildCache; a fresh one plans from scratch."""

    def __init__(self, max_specs: int = 8) -> None:
        self.services: ServiceMemo[Planned] = ServiceMemo()
        # nginx.endpoints dynamic: each planned upstream's dynamic form, by value, so an
        # unchanged service keeps the very object (plan/endpoints.py compares by identity).
        self.dynamic: dict[Upstream, tuple[Upstream, tuple[str, ...]]] = {}
        # ...and the last one per upstream name, found by identity first (hashing 10,000
        # upstreams per pass costs more than the rest of this step).
        self.dynamic_by_name: dict[str, tuple[Upstream, tuple[Upstream, tuple[str, ...]]]] = {}
        self.digests = ServiceDigests()
        self.max_specs = max_specs
        self._specs: dict[int, SpecPlan] = {}
        self.last_pass: LastPass | None = None  # dynamic mode: see last_pass.py
        self.last_token: object | None = None  # the Revision token of the last plan made

    def spec_plan(self, spec: Spec) -> SpecPlan:
        """The SpecPlan of this very spec object (specs are frozen; the plan holds it, so
        its id cannot be reused while it is here)."""
        fixed = self._specs.get(id(spec))
        if fixed is None or fixed.spec is not spec:
            if len(self._specs) >= self.max_specs:
                del self._specs[next(iter(self._specs))]  # the oldest
            fixed = self._specs[id(spec)] = SpecPlan(spec)
        return fixed


@without_collector
def make_plan(
    spec: Spec,
    catalog: Catalog,
    now: datetime | None = None,
    observed: Observed | None = None,
    *,
    memo: PlanMemo | None = None,
) -> Plan:
    """Decide upstreams and locations.

    `now` places warm-up ramps (None: no ramp at all); `observed` carries what nginxgen saw
    over time (first-seen and return times, pseudo-dead instances) as plain data.
    Services whose inputs did not change since an earlier plan made with the same `memo`
    reuse its result (memo.py), so one changed instance among 10,000 services re-plans
    one service; without a memo every service is planned afresh.
    """
    observed = observed or Observed()
    notes: list[str] = list(catalog.notes)
    refused: list[str] = []
    changes: list[datetime] = []
    upstreams: dict[str, Upstream] = {}
    splits: list[SplitPlan] = []
    split_live: set[str] = set()  # split services with a version to serve
    standings: dict[str, tuple[Standing, ...]] = {}
    memo = memo if memo is not None else PlanMemo()
    services = memo.services
    with services.lock:
        fixed = memo.spec_plan(spec)
        notes += fixed.notes
        services.sync(observed)
        # Dynamic mode: re-plan the changed services only, when the last pass allows it.
        last, memo.last_pass = memo.last_pass, None
        last_token, memo.last_token = memo.last_token, None  # set again when this one returns
        reused = None
        if last is not None and last.holds(fixed, now) and not services.cleared:
            reused = last if last.update(catalog.services, services, now, observed) else None
        services.evicted, services.cleared = set(), False
        record = LastPass(fixed) if reused is None and LastPass.eligible(fixed) else None
        for name in fixed.service_names if reused is None else ():
            instances = catalog.services.get(name)
            if instances is None:
                notes.append(missing_note(name))
                if record is not None:
                    record.record(name, None, None, ALWAYS)
                continue
            policy = fixed.policy(name)
            if policy.split is not None and name in fixed.http_names and fixed.gateway.split:
                versions = plan_versions(
                    name,
                    instances,
                    policy,
                    fixed.zone,
                    now,
                    observed,
                    services,
                    catalog.splits.get(name),
                )
                notes += versions.notes
                refused += versions.refused
                changes += versions.changes
                splits.append(versions.split)
                for up in versions.upstreams:
                    upstreams[up.name] = up
                if any(bp for _, bp in versions.split.effective):
                    split_live.add(name)
                else:
                    notes.append(f"service {name!r}: no live instance; its routes answer 503")
                continue
            planned, window = plan_one(name, instances, fixed, services, now, observed)
            if record is not None:
                record.record(name, instances, planned, window)
            if planned.notes:
                notes += planned.notes
            if planned.refused:
                refused += planned.refused
            if planned.changes:
                changes += planned.changes
            standings[name] = planned.standings
            if planned.upstream is None:
                notes.append(dead_note(name))
                continue
            upstreams[name] = planned.upstream
        if reused is not None:  # every service's share, the changed ones re-planned
            memo.last_pass = reused
            notes += reused.note_list()
            refused += reused.refused_list()
            changes += reused.change_list()
            standings = reused.standings_copy()
            upstreams = reused.upstreams
        elif record is not None and not services.evicted and not services.cleared:
            memo.last_pass = record  # the memo still holds every service it may reuse
            record.seen = catalog.services
        if fixed.dynamic:
            kept = memo.last_pass if reused is None else None  # this full walk's record
            http = _dynamic_upstreams(upstreams, fixed, memo, notes, reused, kept)
            locations, cache, surface = fixed.locations(fixed.http_names)
        else:
            version_ups = {u.name for p in splits for u in versions_of(p, upstreams)}
            http = {n: u for n, u in upstreams.items() if n in fixed.http_names or n in version_ups}
            locations, cache, surface = fixed.locations(frozenset(http.keys()) | split_live)
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

    ups = tuple(http.values())
    revision = None
    if fixed.dynamic:  # what the next pass's push compares (model/plan.Revision)
        base = last_token if reused is not None else None
        changed = frozenset(reused.changed) if reused is not None else frozenset()
        revision = Revision(ups, http, base, changed)
    memo.last_token = revision.token if revision is not None else None
    return Plan(
        upstreams=ups,
        revision=revision,
        locations=locations,
        catch_all=fixed.catch_all,
        notes=tuple(notes),
        catalog_fingerprint=catalog.fingerprint(memo.digests),
        spec_path=spec.source_path,
        services_seen=len(catalog.services),
        instances_seen=catalog.instance_count,
        dropped=tuple(str(d) for d in catalog.dropped) + tuple(refused),
        gateway=fixed.gateway,
        cache=cache,
        bff=fixed.bff,
        next_change_at=min(changes, default=None),
        surface=surface,
        standings=standings,
        feed=fixed.feed,
        splits=tuple(splits),
    )


def with_nobody_pages(
    servers: tuple[HostServer, ...], locations: tuple[Location, ...]
) -> tuple[HostServer, ...]:
    """Each server with the named locations its routes' `error_page 500` goes to: the
    shared one, and a route's own where the route adds headers (Location.nobody_page)."""
    shared: set[int] = set()
    grpc: set[int] = set()
    own: dict[int, dict[str, RoutePage]] = {}
    for loc in locations:
        if loc.nobody_check != "page":
            continue
        if loc.grpc:
            grpc.add(loc.server)
        elif loc.nobody_page == NOBODY_PAGE or loc.http is None:
            shared.add(loc.server)
        else:
            page = RoutePage(loc.nobody_page, loc.http, loc.hsts_var)
            own.setdefault(loc.server, {})[page.name] = page
    return tuple(
        replace(
            s,
            nobody_page=s.index in shared,
            route_pages=tuple(own.get(s.index, {}).values()),
            grpc_500=s.index in grpc,
        )
        for s in servers
    )


def versions_of(split: SplitPlan, upstreams: dict[str, Upstream]) -> list[Upstream]:
    names = (split.upstream(v) for v, _ in split.configured)
    return [upstreams[n] for n in names if n in upstreams]


def _dynamic_upstreams(
    upstreams: dict[str, Upstream],
    fixed: SpecPlan,
    memo: PlanMemo,
    notes: list[str],
    reused: LastPass | None = None,
    record: LastPass | None = None,
) -> dict[str, Upstream]:
    """Every HTTP service's dynamic upstream, in spec order, with nobody alive too (its
    endpoint set is then empty and Lua answers 503): a service that comes back is a push.
    Stream upstreams stay static (`upstreams` is not changed). With `reused` (a pass of
    last_pass.py) only the re-planned services' upstreams are looked at; `record` keeps
    this full walk's for the next pass."""
    cache = memo.dynamic
    if len(cache) > 2 * len(fixed.service_names) + 1024:
        cache.clear()
        memo.dynamic_by_name.clear()
    if reused is not None:  # a pass without splits: each upstream is its service's
        mine = [n for n in reused.changed if n in reused.dynamic]  # not `& keys()`: a copy
        for name in sorted(mine, key=reused.index.__getitem__):
            dyn, refusals = _dynamic_one(name, name, upstreams, fixed, memo)
            reused.dynamic[name] = dyn
            keep_nonempty(reused.dynamic_notes, reused.index[name], refusals)
        notes += [n for i in sorted(reused.dynamic_notes) for n in reused.dynamic_notes[i]]
        return dict(reused.dynamic)
    out: dict[str, Upstream] = {}
    for service, name in fixed.upstream_names():
        dyn, refusals = _dynamic_one(service, name, upstreams, fixed, memo)
        out[name] = dyn
        notes += refusals
        if record is not None and refusals:
            record.dynamic_notes[record.index[name]] = refusals
    if record is not None:
        record.dynamic = dict(out)
    return out


def _dynamic_one(
    service: str, name: str, upstreams: dict[str, Upstream], fixed: SpecPlan, memo: PlanMemo
) -> tuple[Upstream, tuple[str, ...]]:
    """Upstream `name` (of `service`) in its dynamic form, and the peers it refuses."""
    cache, by_name = memo.dynamic, memo.dynamic_by_name
    static = upstreams.get(name)
    if static is None:
        policy = fixed.policy(service)
        snippet = policy.snippets.text if policy.snippets else None
        balance = balance_args(policy.balance)
        static = Upstream(name, (), policy.keepalive, None, balance, snippet)
    last = by_name.get(name)
    if last is not None and last[0] is static:  # the memo's very object: no hashing
        return last[1]
    known = cache.get(static)
    if known is None:
        hashed = bool(static.balance) and static.balance[0] == "hash"
        dyn = replace(
            static,
            zone=None,
            snippet=static.snippet,
            dynamic=True,
            hash_var=hash_variable(name) if hashed else None,
        )
        known = cache[static] = (dyn, tuple(peer_refusals(dyn)))
    by_name[name] = (static, known)
    return known


def next_change_at(
    spec: Spec,
    catalog: Catalog,
    now: datetime,
    observed: Observed | None = None,
    *,
    memo: PlanMemo | None = None,
) -> datetime | None:
    """When the plan changes with no registry event: the next step of any warm-up ramp."""
    return make_plan(spec, catalog, now, observed, memo=memo).next_change_at


class SpecPlan:
    """What a Spec alone decides, worked out once per Spec object (specs are frozen):
    policies, the gateway, and each route's Location with and without an upstream."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec  # held, so PlanMemo's identity check stays sound
        self.service_names = spec.service_names
        self.http_names_ordered = spec.http_service_names
        self.http_names = frozenset(self.http_names_ordered)
        self.dynamic = spec.nginx.dynamic and bool(self.http_names_ordered)
        self.feed = (
            FeedSetup(
                token_path=spec.nginx.token_path,
                snapshot=spec.nginx.snapshot_path,
                dict_size=spec.nginx.endpoints_dict_size,
            )
            if self.dynamic
            else None
        )
        self.http = plan_route_http(spec)
        self.surface = replace(plan_surface(spec), route_maps=self.http.maps)
        # Every host's routes in one list, the default host's first: their index is the
        # one the gateway's guards and the cache use.
        self.routes = [(i, r) for i, vh in enumerate(spec.virtual_hosts) for r in vh.routes]
        self.zone = None if spec.nginx.upstream_zone == "off" else spec.nginx.upstream_zone
        self.gateway, self.guards = plan_gateway(spec)
        self.catch_all = not any(r.path == "/" and r.match == "prefix" for r in spec.routes)
        self.notes = cache_notes(spec)
        self.bff = plan_bff(spec, self.guards)
        if not self.gateway.split and any(p.split for p in spec.services.values()):
            off = "services.*.split: ignored with nginx.status_listen off (shifts are pushed there)"
            self.notes = (*self.notes, off)
        self._default: ServicePolicy | None = None
        self._upstream_names: list[tuple[str, str]] | None = None
        n = len(self.routes)
        self._serving: list[Location | None] = [None] * n
        self._unavailable: list[Location | None] = [None] * n
        self._last: (
            tuple[frozenset[str], tuple[Location, ...], CacheSetup | None, Surface] | None
        ) = None

    def upstream_names(self) -> list[tuple[str, str]]:
        """(service, upstream) for every HTTP upstream, in spec order: a split service has
        one per version of its split (plan/split.py), any other one of its own name.
        The spec alone decides them: worked out once."""
        if self._upstream_names is not None:
            return self._upstream_names
        out = []
        for name in self.http_names_ordered:
            split = self.policy(name).split if self.gateway.split else None
            if split is None:
                out.append((name, name))
            else:
                out += [(name, version_upstream(name, v)) for v in split.versions]
        self._upstream_names = out
        return out

    def policy(self, name: str) -> ServicePolicy:
        own = self.spec.services.get(name)
        if own is not None:
            return own
        if self._default is None:  # one object for all, so the memo compares by identity
            self._default = self.spec.service_policy(name)
        return self._default

    def locations(
        self, live: Collection[str]
    ) -> tuple[tuple[Location, ...], CacheSetup | None, Surface]:
        """Every route's Location for this set of services with an upstream, and the
        surface whose servers hold the named 503 location their routes need."""
        if self._last is not None and self._last[0] == live:
            return self._last[1], self._last[2], self._last[3]
        out = []
        for i, (_, r) in enumerate(self.routes):
            serving = r.aggregate is not None or r.service in live
            variants = self._serving if serving else self._unavailable
            loc = variants[i]
            if loc is None:
                loc = variants[i] = self._location(i, serving)
            if self.bff is not None and r.aggregate is not None:
                out += aggregate_locations(i, r, loc, self.bff, live)
            elif self.bff is not None and r.image_fit is not None:
                out += image_fit_locations(i, loc, self.bff)
            else:
                out.append(loc)
        locations = tuple(out)
        cache = cache_setup(self.spec, tuple(loc.cache for loc in locations if loc.cache))
        servers = with_nobody_pages(self.surface.servers, locations)
        surface = replace(self.surface, servers=servers)
        self._last = (frozenset(live), locations, cache, surface)
        return locations, cache, surface

    @staticmethod
    def _nobody_page(i: int, grpc: bool, http: RouteHttp | None) -> str:
        """Where the route's `error_page 500` goes (Location.nobody_page)."""
        if grpc:
            return GRPC_500
        return f"{NOBODY_PAGE}_{i}" if http and http.adds_headers else NOBODY_PAGE

    def _location(self, i: int, serving: bool) -> Location:
        host, r = self.routes[i]
        guard = self.guards[i]
        # A route answering 503 on purpose has nothing worth caching.
        cache = route_cache(self.spec, i, r, guard) if serving else None
        sent = {f.name.lower() for f in guard.forward}  # set from the auth answer instead
        cleared = FORWARDING_CLEARED + (cache.stripped if cache else ())
        split = self.policy(r.service).split if self.gateway.split and r.service else None
        split = None if r.protocol == "grpc" else split
        if sent:
            cleared = tuple(h for h in cleared if h.lower() not in sent)
        http, cleared = with_cleared(self.http.routes[i], cleared)
        return Location(
            path=r.path,
            exact=r.exact,
            service=r.service or "",
            upstream=r.service if serving and r.service else None,
            split=split is not None,
            mirror=split is not None and split.mirror is not None,
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
            dynamic=self.dynamic,
            snippet=r.snippets.text if r.snippets else None,
            http=http,
            nobody_page=self._nobody_page(i, r.protocol == "grpc", http),
        )
