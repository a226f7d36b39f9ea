"""The Plan: what nginx should do, as plain frozen values. `plan.make_plan` decides it,
`render` lays it out, `verify` checks the text against it.

It splits into the structure (upstreams, locations, the gateway's shared pieces, the
cache) and, per upstream, the servers with their effective weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from ..spec import Failover, RedisSpec, Timeouts
from .bff import AggregateRoute, BffSetup, ImageFit, PartTarget
from .names import CACHE_STATE_DICT, CACHE_STATE_DICT_SIZE, FORWARDING_CLEARED, NOBODY_PAGE
from .route_http import RouteHttp
from .surface import Surface

# --- the gateway's cross-cutting pieces (plan.gateway decides them) ----------------------


@dataclass(frozen=True)
class LimitZone:
    name: str
    key: str  # the nginx variable, with its `$`
    size: str
    rate: str


@dataclass(frozen=True)
class KeySet:
    """Accepted API key digests; a `map` turns the request's digest into 1 or 0."""

    variable: str  # map output, without `$`
    digests: tuple[str, ...]


@dataclass(frozen=True)
class ForwardHeader:
    name: str  # as sent to the upstream
    variable: str  # auth_request_set target, without `$`
    source: str  # $upstream_http_* of the auth response, without `$`


@dataclass(frozen=True)
class Guard:
    """One route's policies, ready to lay out inside its location."""

    label: str  # the route's name in metrics and logs
    limit_zone: str | None = None
    burst: int = 0
    nodelay: bool = True
    retry_after: int = 1  # seconds, sent with 429
    limit_conn: int | None = None
    api_key_header: str | None = None
    api_key_var: str | None = None  # $http_* carrying the key, without `$`
    key_set: str | None = None  # KeySet.variable
    auth_location: str | None = None  # internal location doing auth_request
    auth_url: str | None = None
    forward: tuple[ForwardHeader, ...] = ()

    @property
    def limited(self) -> bool:
        return self.limit_zone is not None or self.limit_conn is not None


@dataclass(frozen=True)
class Gateway:
    zones: tuple[LimitZone, ...] = ()
    conn_zone: bool = False
    key_sets: tuple[KeySet, ...] = ()
    status_listen: str | None = None  # the loopback status server, None when off
    metrics: bool = False  # Lua request counters, served on the status server
    json_log: bool = False
    split: bool = False  # services.NAME.split: lua/nginxgen/split.lua, pushed on the status server
    dynamic: bool = False  # nginx.endpoints dynamic: Lua balancer fed on the status server

    @property
    def lua_modules(self) -> tuple[str, ...]:
        """Lua modules the rendered config requires (preloaded by the master)."""
        mods = []
        if self.key_sets:
            mods.append("nginxgen.apikey")
        if self.metrics:
            mods.append("nginxgen.metrics")
        if self.split:
            mods.append("nginxgen.split")
        if self.dynamic:
            mods += ["nginxgen.balancer", "nginxgen.endpoints"]
        return tuple(mods)

    @property
    def uses_lua(self) -> bool:
        return bool(self.lua_modules)


# --- the Redis cache (plan.cache decides it; lua/nginxgen/cache.lua runs it) -------------


@dataclass(frozen=True)
class RouteCache:
    id: str  # what the location passes to the Lua module
    ttl: float
    statuses: tuple[int, ...]
    max_body: int
    bypass_credentials: bool
    allow_no_cache: bool
    key_host: str | None  # the Host keyed on and sent upstream; None: the client's ($host)
    identity_vars: tuple[str, ...]  # nginx variables holding the identity sent upstream
    key_headers: tuple[str, ...]  # request headers keyed on (and passed upstream)
    stripped: tuple[str, ...]  # request headers never sent upstream from this route
    stampede_wait: float
    l1_dict: str | None
    l1_size: str | None
    l1_ttl: float


@dataclass(frozen=True)
class CacheSetup:
    redis: RedisSpec
    routes: tuple[RouteCache, ...]

    @property
    def env(self) -> tuple[str, ...]:
        """Environment variables nginx must pass to Lua (`env NAME;` in the main context)."""
        return (self.redis.password_env,) if self.redis.password_env else ()

    @property
    def shared_dicts(self) -> tuple[tuple[str, str], ...]:
        l1 = tuple((r.l1_dict, r.l1_size) for r in self.routes if r.l1_dict and r.l1_size)
        return ((CACHE_STATE_DICT, CACHE_STATE_DICT_SIZE),) + l1


@dataclass(frozen=True)
class FeedSetup:
    """nginx.endpoints dynamic: what nginx.conf needs for the endpoint feed
    (docs/endpoints-feed.md). `token_sha256` is filled in by the pipeline, which reads
    (or creates) the token file; the plan itself does no I/O."""

    token_path: str
    snapshot: str
    dict_size: str
    token_sha256: str = ""


# --- upstreams, locations, the plan ------------------------------------------------------


@dataclass(frozen=True)
class Server:
    address: str
    weight: int
    max_fails: int
    fail_timeout: float
    instance_id: str
    backup: bool = False
    down: bool = False  # kept in a hash/ip_hash upstream so the mapping stays stable


# Where a registry instance stands in a plan (Standing.state). `passive_failed` is not a
# plan's word: nginx's passive checks decide it at run time (watch/instances.py).
STANDINGS = ("serving", "warming", "draining", "pseudo_dead", "out")


class Standing(NamedTuple):
    """One registry instance of a service as the plan places it, for `nginxgen status`
    and the per-instance gauges; never rendered (the config is the same without it).
    A NamedTuple: a full plan makes one per instance, 100,000 at scale."""

    id: str
    address: str
    state: str  # one of STANDINGS
    weight: int  # the nginx weight planned; 0 when not in the upstream (or `down` there)
    percent: int | None = None  # warming: the share of its weight it gets, in %
    reason: str = ""  # why it is not simply serving, in a few words


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
        return {k: v for k, v in self.__dict__.items() if k not in ("_hash", "_shape")}


@dataclass(frozen=True)
class Upstream(_HashedOnce):
    name: str
    servers: tuple[Server, ...]
    keepalive: int
    zone: str | None
    balance: tuple[str, ...] = ()  # the balancing directive; () for round robin
    snippet: str | None = None  # services.NAME.snippets: the spec author's nginx text
    # nginx.endpoints dynamic: rendered as a placeholder server and the Lua balancer; the
    # servers above become the endpoint set the feed carries (plan/endpoints.py).
    dynamic: bool = False
    hash_var: str | None = None  # dynamic hash upstreams: the map variable holding the key

    __hash__ = _HashedOnce._hash_once

    @property
    def shape(self) -> tuple[object, ...]:
        """Everything of this upstream that nginx.conf holds in dynamic mode: all but the
        servers (computed once per object; memoized upstreams keep theirs)."""
        cached: tuple[object, ...] | None = self.__dict__.get("_shape")
        if cached is None:
            servers = () if self.dynamic else self.servers
            cached = (self.name, servers, self.keepalive, self.zone, self.balance)
            cached += (self.snippet, self.dynamic, self.hash_var)
            object.__setattr__(self, "_shape", cached)
        return cached


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
    guard: Guard | None = None  # rate limits, auth, metrics label (plan/gateway.py)
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
    # services.NAME.split: Lua picks the version's upstream per request (plan/split.py);
    # `upstream` then names the service, not an upstream block.
    split: bool = False
    mirror: bool = False  # split.mirror: copies go to MIRROR_PREFIX + service
    # nginx.endpoints dynamic: the upstream is always there; the route answers 503 (or
    # gRPC UNAVAILABLE) while its service has nobody to serve (nobody_check).
    dynamic: bool = False
    http: RouteHttp | None = None  # methods, rewrite, headers, CORS, upstream TLS
    # Where its `error_page 500` goes (nobody_check "page"): the server's NOBODY_PAGE, or
    # one of the route's own when the route adds headers (CORS, headers.response), which a
    # named location of the server would not carry (Surface: HostServer.route_pages).
    nobody_page: str = NOBODY_PAGE
    # The BFF layer (model/bff.py): an aggregate route fans out in Lua to its parts'
    # internal locations; an image_fit route resizes images on the way out.
    aggregate: AggregateRoute | None = None
    part: PartTarget | None = None
    image_fit: ImageFit | None = None

    __hash__ = _HashedOnce._hash_once

    @property
    def checks_endpoints(self) -> bool:
        """nginx.endpoints dynamic, and this block proxies to its upstream itself (not an
        aggregate or an image fit, which reach theirs through part locations): Lua answers
        503 while the service has nobody to serve."""
        if not self.dynamic or self.upstream is None or self.aggregate is not None:
            return False
        return self.image_fit is None or self.part is not None

    @property
    def nobody_check(self) -> str:
        """How the route answers "nobody to serve" at request time (a split with no
        version, or a dynamic upstream with no peer): "" never (reload mode, or nobody
        alive when rendered: a `return 503`); "page" through `error_page 500`, which no
        Lua phase costs (the balancer refuses with a 500, the split's `if` returns one;
        docs/dynamic-endpoints.md); "lua" a rewrite_by_lua check, for a cached route
        (its access phase would run first and take a stampede lock the redirect drops)
        and an aggregate's part (a subrequest)."""
        split = self.split and self.upstream is not None
        if not split and not self.checks_endpoints:
            return ""
        if self.cache is not None or self.part is not None or (split and self.grpc):
            return "lua"
        return "page"


@dataclass(frozen=True, eq=False)
class Revision:
    """What a plan pass knows about its plan against the pass before it (plan/last_pass.py
    re-plans only the changed services): which upstreams may differ, the others being that
    plan's very objects. Compared by identity only; `upstreams` is the plan's own tuple, so
    a plan copied with other upstreams (dataclasses.replace) is not taken for this one."""

    upstreams: tuple[Upstream, ...]
    by_name: Mapping[str, Upstream]  # the same upstreams by name
    base: object | None = None  # the `token` of the pass this one started from
    changed: frozenset[str] = frozenset()  # upstream names that may differ from base's
    token: object = field(default_factory=object)


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
    surface: Surface = Surface()  # server blocks, listeners, TLS, streams (model/surface.py)
    # services.NAME.split: the weights in force per version (pushed, not rendered: a
    # shift needs no reload). Typed loosely here: plan/split.py's SplitPlan.
    splits: tuple[Any, ...] = ()
    # sha256 hex of the token the split push needs (filled in by the pipeline: no I/O here).
    split_token_sha256: str = ""
    bff: BffSetup | None = None  # set when a route aggregates or fits images
    # Per service in the registry, every instance as the plan places it (never rendered).
    standings: Mapping[str, tuple[Standing, ...]] = field(default_factory=dict)
    feed: FeedSetup | None = None  # nginx.endpoints dynamic
    # Set by make_plan in dynamic mode (see Revision); never part of a plan's value.
    revision: Revision | None = field(default=None, compare=False, repr=False)

    @cached_property
    def structure(self) -> tuple[object, ...]:
        """What needs a reload to change: everything nginx.conf holds but the endpoint sets
        of dynamic upstreams (those are pushed, plan/endpoints.py). Two plans with equal
        structures differ only in what a push carries. Computed once per plan (plans are
        frozen; `watch` compares each new one with the one serving)."""
        return (tuple(u.shape for u in self.upstreams), *self.structure_parts())

    def structure_parts(self) -> tuple[object, ...]:
        """The structure but the upstreams' shapes (cheap: no walk over them)."""
        return (
            self.locations,
            self.catch_all,
            self.gateway,
            self.cache,
            self.surface,
            self.feed,
            self.bff,
        )

    @property
    def server_count(self) -> int:
        return sum(len(u.servers) for u in self.upstreams)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


class Revised(NamedTuple):
    """What two plans' revisions say: the upstreams that may differ, and each plan's
    upstreams by name (the others are the same objects in both)."""

    names: frozenset[str]
    old: Mapping[str, Upstream]
    new: Mapping[str, Upstream]


def revised(old: Plan, new: Plan) -> Revised | None:
    """`changed_upstreams`, with both plans' upstreams by name; None when not known."""
    a, b = old.revision, new.revision
    if a is None or b is None or a.upstreams is not old.upstreams:
        return None
    if b.upstreams is not new.upstreams:
        return None
    if a.token is b.token:
        return Revised(frozenset(), a.by_name, b.by_name)
    return Revised(b.changed, a.by_name, b.by_name) if b.base is a.token else None


def changed_upstreams(old: Plan, new: Plan) -> frozenset[str] | None:
    """The names of the upstreams that may differ between `old` and `new` (in either, or
    other objects), when their revisions say so; None when not known: compare them all."""
    known = revised(old, new)
    return known.names if known is not None else None


def same_structure(old: Plan, new: Plan) -> bool:
    """old.structure == new.structure, looking only at the upstreams that may differ."""
    known = revised(old, new)
    if known is None:
        return old.structure == new.structure
    names, a, b = known
    if len(old.upstreams) != len(new.upstreams) or old.structure_parts() != new.structure_parts():
        return False
    return all(n in a and n in b and a[n].shape == b[n].shape for n in names)
