"""The endpoint sets of a Plan, as the Lua feed takes them (docs/endpoints-feed.md).

In `nginx.endpoints: dynamic` mode nginx.conf holds each HTTP upstream's shape only
(Plan.structure); who serves with which weight travels as data: the rendered plan
document seeds nginx, `watch` pushes what changed (deploy/feed.py). Everything here is
pure and a function of the Plan's values:

- `lua_balance(upstream)`: the Lua balancer's method name for the planned `balance`;
- `endpoint_set(upstream)`: one service's push entry — peers with their effective
  weights (warm-up steps included), `state: "down"` for instances a hash upstream keeps
  in place, `backup`, `max_fails`/`fail_timeout`; instances that must not serve (drained,
  down, pseudo-dead) are not in the Upstream and so not in the set;
- `plan_document(plan)`: the document `init` gets in nginx.conf (generation 0: anything
  the sidecar pushed or persisted is newer);
- `changed_endpoints(old, new)`: the delta a push carries, by upstream name;
- `hash_variable(name)`: the map variable that holds a hash upstream's key.

Peers must be IP literals (Lua refuses names): an instance registered by host name is left
out of the set, and `peer_refusals` says so. The split helper (issue 15) builds on these.
"""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from ..model.plan import Plan, Server, Upstream, revised

Peer = dict[str, Any]
EndpointSet = dict[str, Any]  # {"peers": [Peer, ...]}

_METHODS = {(): "round_robin", ("least_conn",): "least_conn", ("ip_hash",): "ip_hash"}
_METHODS[("random",)] = "random"


def lua_balance(upstream: Upstream) -> str:
    """The balancer's method for the planned `balance` directive."""
    b = upstream.balance
    if b and b[0] == "hash":
        return "consistent_hash" if len(b) == 3 else "hash"
    return _METHODS[b]


def hash_variable(name: str) -> str:
    """A variable name for `name`'s hash key: nginx variables are [a-z0-9_], service names
    are not; a digest keeps it stable whatever else the spec holds."""
    return "nginxgen_hash_" + hashlib.sha256(name.encode()).hexdigest()[:12]


def split_address(address: str) -> tuple[str, int] | None:
    """("10.0.0.1", 8080) for "10.0.0.1:8080", ("fd00::7", 80) for "[fd00::7]:80"; None
    when the host is not an IP literal (the Lua feed takes literals only)."""
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or not port.isdigit():
        return None
    return str(ip), int(port)


def _fail_timeout(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


def peer(server: Server) -> Peer | None:
    where = split_address(server.address)
    if where is None:
        return None
    out: Peer = {"host": where[0], "port": where[1], "weight": server.weight}
    if server.down:
        out["state"] = "down"  # a hash upstream keeps its place, so other keys stay put
    if server.backup:
        out["backup"] = True
    out["max_fails"] = server.max_fails
    out["fail_timeout"] = _fail_timeout(server.fail_timeout)
    return out


def _endpoint_set(servers: tuple[Server, ...]) -> list[Peer]:
    return [p for p in map(peer, servers) if p is not None]


def endpoint_set(upstream: Upstream) -> EndpointSet:
    """One service's entry in a push or in the plan document (fresh dicts: callers may
    serialise or change them)."""
    return {"peers": _endpoint_set(upstream.servers)}


def peer_refusals(upstream: Upstream) -> list[str]:
    """Why planned servers are not in the endpoint set (names instead of IP literals)."""
    return [
        f"service {upstream.name!r} instance {s.instance_id!r}: {s.address} is not an IP "
        "address; endpoints: dynamic needs IP literals, left out"
        for s in upstream.servers
        if split_address(s.address) is None
    ]


def dynamic_upstreams(plan: Plan) -> tuple[Upstream, ...]:
    return tuple(u for u in plan.upstreams if u.dynamic)


def endpoints(plan: Plan) -> dict[str, EndpointSet]:
    """Every dynamic upstream's endpoint set, by name (a snapshot lists them all)."""
    return {u.name: endpoint_set(u) for u in dynamic_upstreams(plan)}


def plan_document(plan: Plan, generation: int = 0) -> dict[str, Any]:
    """What `nginxgen.endpoints.init` gets: every upstream's method and initial endpoints."""
    ups = dynamic_upstreams(plan)
    return {
        "generation": generation,
        "upstreams": {u.name: {"balance": lua_balance(u)} for u in ups},
        "services": {u.name: endpoint_set(u) for u in ups},
    }


def changed_endpoints(old: Plan | None, new: Plan) -> dict[str, EndpointSet]:
    """The services whose endpoint set differs from `old`'s (all of them without `old`).
    Unchanged services are the very objects the plan memo reused, so this costs one
    identity check per service, or nothing for the ones the plans' revisions say are
    unchanged (model/plan.revised)."""
    known = revised(old, new) if old is not None else None
    if known is not None:
        names, a, b = known
        changed: dict[str, EndpointSet] = {}
        for name in sorted(names):
            u, prev = b.get(name), a.get(name)
            if u is None or not u.dynamic or prev is u:
                continue
            if prev is None or _endpoint_set(prev.servers) != _endpoint_set(u.servers):
                changed[name] = endpoint_set(u)
        return changed
    ups = dynamic_upstreams(new)
    if old is not None:
        was_ups = dynamic_upstreams(old)
        if len(was_ups) == len(ups):  # the same structure, as watch asks: side by side
            out: dict[str, EndpointSet] = {}
            for prev, u in zip(was_ups, ups, strict=True):
                if prev is u:
                    continue
                if prev.name != u.name:
                    break  # another order: by name below
                if _endpoint_set(prev.servers) != _endpoint_set(u.servers):
                    out[u.name] = endpoint_set(u)
            else:
                return out
    before = {u.name: u for u in dynamic_upstreams(old)} if old is not None else {}
    out = {}
    for u in ups:
        was = before.get(u.name)
        if was is None or (was is not u and _endpoint_set(was.servers) != _endpoint_set(u.servers)):
            out[u.name] = endpoint_set(u)
    return out
