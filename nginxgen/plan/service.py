"""One service's upstream: which instances serve, with which weight, in which zone.

Pure, and a function of its arguments only, so `make_plan` may reuse its result while
they stay equal (memo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..model.catalog import LIVE_STATES, Instance, instance_key
from ..model.observed import Observed
from ..model.plan import Server, Standing, Upstream
from ..spec import NO_BACKUP_METHODS, ServicePolicy, balance_args
from ..spec.cache import parse_size
from .memo import ALWAYS, CLOCKLESS, Window, intersect, ramp_window
from .warmup import Ramp, ramp, ramp_start, ramped_weight, scale_factor

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
class Planned:
    """One service's share of a Plan."""

    upstream: Upstream | None  # None: nobody to serve
    notes: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    changes: tuple[datetime, ...] = ()  # when its warm-up ramps take their next step
    standings: tuple[Standing, ...] = ()  # every instance, as placed (model/plan.py)


def plan_service(
    name: str,
    instances: tuple[Instance, ...],
    policy: ServicePolicy,
    zone: str | None,  # the configured minimum (nginx.upstream_zone), None when off
    now: datetime | None,
    observed: Observed,
) -> tuple[Planned, Window, list[str]]:
    """One service's upstream, notes, refusals and ramp steps; plus the times `now` at
    which that result holds and the observed-state keys it read (for plan/memo.py)."""
    notes: list[str] = []
    refused: list[str] = []
    balance = balance_args(policy.balance)
    method = balance[0] if balance else "round_robin"
    keys = [instance_key(i) for i in instances]
    up = [(i, k) for i, k in zip(instances, keys, strict=True) if i.state in LIVE_STATES]
    dead = {k for _, k in up} & observed.dead
    kept_dead: set[str] = set()
    if dead and len(dead) == len(up):
        # Probe evidence alone never takes a whole service down: passive checks still run.
        notes.append(
            f"service {name!r}: every instance fails its health probe; keeping them all in"
        )
        kept_dead, dead = dead, set()
    serving = [i for i, k in up if k not in dead]
    held_out = [i for i in instances if i not in serving] if method in STABLE_METHODS else []

    chosen: dict[str, tuple[Instance, bool]] = {}  # address -> (instance, down)
    left_out: dict[str, str] = {}  # instance key -> why it is not in the upstream
    for inst, down in [(i, False) for i in serving] + [(i, True) for i in held_out]:
        # Two registry entries for one address would make nginx count it twice.
        address = inst.address
        if address in chosen:
            left_out[instance_key(inst)] = f"same address as instance {chosen[address][0].id}"
            continue
        if method in NO_BACKUP_METHODS and _is_backup(inst):
            if not down:
                refused.append(
                    f"service {name!r} instance {inst.id!r}: backup instances cannot be used "
                    f"with balance {policy.balance!r} (nginx refuses them); left out — use "
                    "round_robin or least_conn, or remove the backup tag"
                )
                left_out[instance_key(inst)] = f"backup, refused with balance {policy.balance}"
            continue
        chosen[address] = (inst, down)
    backups = {a for a, (i, _) in chosen.items() if _is_backup(i)}
    primaries = [(a, i) for a, (i, down) in chosen.items() if not down and a not in backups]
    if not primaries:
        # nothing to serve (only backups would still render, but never serve)
        places = _standings(instances, keys, {}, {}, dead, kept_dead, left_out, empty=True)
        return Planned(None, tuple(notes), tuple(refused), standings=places), ALWAYS, keys

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
    planned_servers: dict[str, Server] = {}
    for address, (inst, down) in chosen.items():
        r = ramping.get(address)
        weight = ramped_weight(inst.weight, r.fraction if r else 1.0, factor)
        if r:
            notes.append(
                f"service {name!r} instance {inst.id!r}: warming up, step {r.step} of "
                f"{r.steps} ({round(r.fraction * 100)}% of its weight)"
            )
        server = Server(
            address=address,
            weight=weight,
            max_fails=policy.health.max_fails,
            fail_timeout=policy.health.fail_timeout,
            instance_id=inst.id,
            backup=address in backups,
            down=down,
        )
        servers.append(server)
        planned_servers[address] = server
    upstream = Upstream(
        name=name,
        servers=tuple(servers),
        keepalive=policy.keepalive,
        zone=upstream_zone(zone, len(servers)),
        balance=balance,
        snippet=policy.snippets.text if policy.snippets else None,
    )
    places = _standings(instances, keys, planned_servers, ramping, dead, kept_dead, left_out)
    planned = Planned(upstream, tuple(notes), tuple(refused), tuple(changes), places)
    return planned, intersect(windows), keys


def _standings(
    instances: tuple[Instance, ...],
    keys: list[str],
    servers: dict[str, Server],  # address -> its server line
    ramping: dict[str, Ramp],  # address -> its ramp, for servers on one
    dead: set[str],  # pseudo-dead keys kept out
    kept_dead: set[str],  # pseudo-dead keys kept in (the whole service fails)
    left_out: dict[str, str],  # key -> why a live instance has no server line
    *,
    empty: bool = False,  # no primary serves: the service's routes answer 503
) -> tuple[Standing, ...]:
    """Where each instance stands, in the registry's order (model/plan.Standing)."""
    out = []
    for inst, key in zip(instances, keys, strict=True):
        address = inst.address
        server = servers.get(address)
        mine = server is not None and server.instance_id == inst.id and key not in left_out
        if inst.state not in LIVE_STATES:
            state = "draining" if inst.state == "draining" else "out"
            place = Standing(inst.id, address, state, 0, None, f"registry: {inst.state}")
        elif key in dead:
            place = Standing(inst.id, address, "pseudo_dead", 0, None, "fails its health probe")
        elif not mine or server is None:
            why = left_out.get(key) or ("no primary instance serves" if empty else "left out")
            place = Standing(inst.id, address, "out", 0, None, why)
        elif key in kept_dead:
            why = "fails its health probe; kept in, as every instance of its service fails"
            place = Standing(inst.id, address, "pseudo_dead", server.weight, None, why)
        elif address in ramping:
            r = ramping[address]
            why = f"warm-up step {r.step} of {r.steps}"
            place = Standing(
                inst.id, address, "warming", server.weight, round(r.fraction * 100), why
            )
        else:
            why = "backup" if server.backup else ""
            place = Standing(inst.id, address, "serving", server.weight, None, why)
        out.append(place)
    return tuple(out)


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
