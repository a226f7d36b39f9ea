"""One service's split: the weights in force per version, and the document Lua reads.

Pure. The configured weights come from the spec or from an override `nginxgen shift`
wrote into the registry (registry/shift.py); a version with no live instance gets no
traffic and its share goes to the others, in proportion to theirs (evenly when theirs
are all 0). Weights travel as basis points (of 10,000): Lua cuts 10,000 buckets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..model.catalog import Instance
from ..model.observed import Observed
from ..model.plan import Upstream
from ..model.split import by_version
from ..registry.shift import ShiftError, parse_override
from ..spec import ServicePolicy
from ..spec.split import Split
from .memo import ServiceMemo
from .service import Planned, plan_service

BUCKETS = 10_000


@dataclass(frozen=True)
class SplitPlan:
    service: str
    configured: tuple[tuple[str, float], ...]  # version → share of 100, as given
    effective: tuple[tuple[str, int], ...]  # version → basis points in force (sum 10,000)
    live: tuple[str, ...]  # versions with at least one live instance
    source: str  # "spec", or where the override was read
    sticky: str  # the nginx variable, "none" for per request
    rules: tuple[tuple[str, str, str, str, str], ...]  # kind, name, op, value, to
    mirror: tuple[str, float] | None  # (version, percent); None when off or it is dead
    note: str = ""  # one line for render/watch when a dead version's share moved

    def upstream(self, version: str) -> str:
        return version_upstream(self.service, version)

    def summary(self) -> str:
        shares = " ".join(f"{v}={bp / 100:g}" for v, bp in self.effective)
        return f"service {self.service!r}: split {shares} ({self.source})"

    def document(self) -> dict[str, Any]:
        """What lua/nginxgen/split.lua reads for this service (pushed, or seeded)."""
        doc: dict[str, Any] = {
            "versions": [
                {"name": v, "upstream": self.upstream(v), "bps": bp, "live": v in self.live}
                for v, bp in self.effective
            ],
            "sticky": self.sticky.lstrip("$") if self.sticky != "none" else "",
            "rules": [
                {"kind": k, "name": n, "op": op, "value": val, "to": to}
                for k, n, op, val, to in self.rules
            ],
        }
        if self.mirror is not None:
            doc["mirror"] = {"to": self.mirror[0], "percent": self.mirror[1]}
        return doc


def version_upstream(service: str, version: str) -> str:
    """The upstream that holds one version's instances."""
    return f"{service}--{version}"


def effective_weights(configured: Mapping[str, float], live: frozenset[str]) -> dict[str, int]:
    """Basis points per configured version: dead versions 0, their share to the live ones.

    Largest-remainder rounding, ties by name, so the result always adds up to 10,000
    when anyone is live (all 0 when nobody is).
    """
    names = sorted(configured)
    alive = [v for v in names if v in live]
    if not alive:
        return {v: 0 for v in names}
    base = {v: configured[v] for v in alive}
    total = sum(base.values())
    if total <= 0:
        base = {v: 1.0 for v in alive}
        total = float(len(alive))
    exact = {v: base[v] * BUCKETS / total for v in alive}
    out = {v: int(exact[v]) for v in alive}
    rest = BUCKETS - sum(out.values())
    for v in sorted(alive, key=lambda v: (-(exact[v] - out[v]), v))[:rest]:
        out[v] += 1
    return {v: out.get(v, 0) for v in names}


def plan_split(
    service: str,
    split: Split,
    live: frozenset[str],
    *,
    weights: Mapping[str, float] | None = None,
    source: str = "spec",
) -> SplitPlan:
    """`weights` (an override) replaces the spec's; rules, sticky and mirror stay."""
    configured = dict(weights if weights is not None else split.weights)
    effective = effective_weights(configured, live)
    dead = [v for v in sorted(configured) if v not in live and configured[v] > 0]
    note = ""
    if dead and any(effective.values()):
        moved = " ".join(f"{v}={bp / 100:g}" for v, bp in sorted(effective.items()))
        names = ", ".join(repr(v) for v in dead)
        note = (
            f"service {service!r}: version {names} has no live instance; "
            f"its share goes to the others ({moved})"
        )
    elif dead:
        note = f"service {service!r}: no version of the split has a live instance"
    rules = tuple(
        (
            *r.source,
            "equals" if r.equals is not None else "matches",
            r.equals if r.equals is not None else (r.matches or ""),
            r.to,
        )
        for r in split.rules
    )
    mirror = None
    if split.mirror is not None and split.mirror.to in live:
        mirror = (split.mirror.to, split.mirror.percent)
    return SplitPlan(
        service=service,
        configured=tuple(sorted(configured.items())),
        effective=tuple(sorted(effective.items())),
        live=tuple(sorted(v for v in configured if v in live)),
        source=source,
        sticky=split.sticky,
        rules=rules,
        mirror=mirror,
        note=note,
    )


@dataclass(frozen=True)
class PlannedSplit:
    """One split service's share of a Plan: an upstream per live version, and the split."""

    upstreams: tuple[Upstream, ...]
    split: SplitPlan
    notes: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    changes: tuple[datetime, ...] = ()


def plan_versions(
    name: str,
    instances: tuple[Instance, ...],
    policy: ServicePolicy,
    zone: str | None,
    now: datetime | None,
    observed: Observed,
    memo: ServiceMemo[Planned],
    override: str | None,
) -> PlannedSplit:
    """Each version's instances planned as a service of their own (warm-up, drain, health
    as usual), named `<service>--<version>`; then the weights in force."""
    split = policy.split
    assert split is not None
    notes: list[str] = []
    refused: list[str] = []
    changes: list[datetime] = []
    groups, invalid = by_version(instances, split.version_from)
    for inst in invalid:
        notes.append(
            f"service {name!r} instance {inst.id!r}: its {split.version_from} is not a valid "
            "version name; it takes no split traffic"
        )
    stray = sorted(set(groups) - set(split.weights))
    if stray:
        notes.append(
            f"service {name!r}: version {', '.join(map(repr, stray))} is not in split.weights; "
            "its instances take no traffic"
        )
    upstreams: list[Upstream] = []
    live: set[str] = set()
    for version in split.versions:
        group = groups.get(version, ())
        up_name = version_upstream(name, version)
        planned = memo.get(up_name, group, policy, zone, now)
        if planned is None:
            planned, window, keys = plan_service(up_name, group, policy, zone, now, observed)
            memo.put(up_name, group, policy, zone, window, keys, planned)
        notes += planned.notes
        refused += planned.refused
        changes += planned.changes
        if planned.upstream is not None:
            upstreams.append(planned.upstream)
            live.add(version)
    weights, source = None, "spec"
    if override is not None:
        where = f"service {name!r}: the split override in the registry"
        try:
            weights, source = parse_override(override, split, where), "registry override"
        except ShiftError as exc:
            notes.append(f"{exc}; the spec's weights stay in force")
    decided = plan_split(name, split, frozenset(live), weights=weights, source=source)
    notes.append(decided.note or decided.summary())
    return PlannedSplit(tuple(upstreams), decided, tuple(notes), tuple(refused), tuple(changes))
