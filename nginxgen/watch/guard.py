"""Hold registry reads that look like an outage rather than a decision.

consul-template and confd render whatever the registry answers; an empty answer during a
registry hiccup empties upstreams that were serving. Here a read that suddenly empties a
service, or removes more than a configured share of its instances at once, is held: the
instances stay in the effective catalog until consecutive reads over a period agree that
they are gone. Instances replaced by new ones in the same read are a deploy, not an
outage, and count against the share only net. Removals the registry announced first (the
instance was `draining` or `down` in the previous catalog, or still is) are deliberate
and pass at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..model.catalog import Catalog, Instance, changed_since
from ..spec import RemovalGuard

DELIBERATE_STATES = ("draining", "down")


@dataclass(frozen=True)
class Held:
    """Removals kept back from the effective catalog, and why."""

    keys: frozenset[tuple[str, str]]  # (service, instance id)
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class GuardResult:
    catalog: Catalog  # what to plan with: the read, with held instances put back
    held: Held | None
    released: tuple[str, ...] = ()  # removals that were held and are now confirmed


def suspicious_removals(
    previous: Catalog,
    current: Catalog,
    max_share: float,
    known: Mapping[str, frozenset[str]] | None = None,
) -> tuple[frozenset[tuple[str, str]], tuple[str, ...]]:
    """Instances that vanished without notice from services that lost too many at once.

    `known` gives, per service under a hold, the instance ids it had before the hold
    began: instances that arrived since count as new, not as part of the service's size.
    """
    keys: set[tuple[str, str]] = set()
    reasons: list[str] = []
    # Only the services the current map says changed, when it knows (model/catalog.py).
    names = changed_since(current.services, previous.services)
    looked = previous.services.items() if names is None else (
        (n, previous.services[n]) for n in sorted(names) if n in previous.services
    )  # fmt: skip
    for name, before in looked:
        if current.services.get(name) == before:
            continue  # most services, most reads: nothing vanished
        after_ids = {i.id for i in current.services.get(name, ())}
        vanished = [i for i in before if i.id not in after_ids]
        sudden = [i for i in vanished if i.state not in DELIBERATE_STATES]
        if not sudden:
            continue
        before_ids = (known or {}).get(name) or frozenset(i.id for i in before)
        serving = [i for i in before if i.state not in DELIBERATE_STATES and i.id in before_ids]
        left = [i for i in current.services.get(name, ()) if i.state not in DELIBERATE_STATES]
        # New instances in the same read make it a replacement (a deploy), not an outage.
        arrived = sum(1 for i in left if i.id not in before_ids)
        share = (len(sudden) - arrived) / max(1, len(serving))
        if not left:
            what = "gone from the registry" if name not in current.services else "emptied"
            reasons.append(f"service {name!r} {what}: {len(sudden)} instance(s) vanished")
        elif share > max_share:
            reasons.append(
                f"service {name!r} lost {len(sudden)} of {len(serving)} instances at once "
                f"({arrived} new; net {share:.0%} > {max_share:.0%})"
            )
        else:
            continue
        keys.update((name, i.id) for i in sudden)
    return frozenset(keys), tuple(reasons)


def restore(current: Catalog, previous: Catalog, keys: frozenset[tuple[str, str]]) -> Catalog:
    """`current` with the instances named by `keys` copied back from `previous`."""
    services = dict(current.services)
    for name in {s for s, _ in keys}:
        back = [i for i in previous.services.get(name, ()) if (name, i.id) in keys]
        merged: dict[str, Instance] = {i.id: i for i in services.get(name, ())}
        for inst in back:
            merged.setdefault(inst.id, inst)
        services[name] = tuple(sorted(merged.values(), key=lambda i: i.id))
    return replace(current, services=dict(sorted(services.items())))


class RemovalHold:
    """Stateful guard between reads: call `check` with every successful read.

    Every read is compared with `accepted`, the effective catalog last applied (held
    instances included), and held instances are copied back from it: an instance whose
    removal was applied never returns, and a held one returns as nginx last had it.
    """

    def __init__(self, config: RemovalGuard) -> None:
        self.config = config
        self._keys: frozenset[tuple[str, str]] = frozenset()
        # Per held service, the instance ids it had when its hold began (see `known`).
        self._known: dict[str, frozenset[str]] = {}
        self._since = 0.0
        self._reads = 0

    @property
    def holding(self) -> bool:
        return bool(self._keys)

    @property
    def recheck_every(self) -> float:
        """How often to read again while holding, so confirmation does not need events."""
        return max(0.05, self.config.confirm_period / self.config.confirm_reads)

    def check(self, accepted: Catalog | None, current: Catalog, now: float) -> GuardResult:
        if accepted is None:
            return GuardResult(current, None)
        keys, reasons = suspicious_removals(
            accepted, current, self.config.max_removed_share, self._known
        )
        if not keys:
            self._clear()
            return GuardResult(current, None)
        if keys != self._keys:  # a new suspicion starts its own confirmation
            self._keys, self._since, self._reads = keys, now, 0
        self._known = {
            name: self._known.get(name) or frozenset(i.id for i in accepted.services[name])
            for name in {s for s, _ in keys}
        }
        self._reads += 1
        if self._reads >= self.config.confirm_reads and now - self._since >= (
            self.config.confirm_period
        ):
            self._clear()
            return GuardResult(current, None, released=reasons)
        return GuardResult(restore(current, accepted, keys), Held(keys, reasons))

    def _clear(self) -> None:
        self._keys, self._known = frozenset(), {}
