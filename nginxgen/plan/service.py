"""One service's upstream: which instances serve, with which weight, in which zone.

Pure, and a function of its arguments only, so `make_plan` may reuse its result while
they stay equal (memo.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..model.catalog import LIVE_STATES, Instance, instance_key
from ..model.observed import Observed
from ..model.plan import Server, Upstream
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
        return Planned(None, tuple(notes), tuple(refused)), ALWAYS, keys

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
    planned = Planned(upstream, tuple(notes), tuple(refused), tuple(changes))
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
