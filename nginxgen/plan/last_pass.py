"""make_plan's last walk over every service, so the next pass re-plans only the changed ones.

At 10,000 services even a memo hit per service (memo.py) costs more than the rest of a
push. `LastPass` keeps each service's share of the last plan and is used for the next one
when nothing it depends on moved for the services it does not look at again:

- the same SpecPlan (so the same policies and zone), dynamic mode, no splits;
- `now` inside every reused service's window (their intersection is kept);
- the memo still holds every reused service and was not cleared: its entries' instance
  keys are how `ServiceMemo.sync` reports an observed-state change (the names it evicts);
- a service is looked at again when its instances are not the very tuple of the last pass
  (sources keep an unchanged service's object), it left or came back, or sync evicted it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from ..model.catalog import changed_since
from ..model.observed import Observed
from ..model.plan import Gateway, Standing, Upstream
from ..spec import ServicePolicy
from .memo import ALWAYS, ServiceMemo, Window, intersect
from .service import Planned, plan_service


class FixedPlan(Protocol):
    """What this module reads of make.py's SpecPlan (a Protocol: make.py imports this
    module, so this one cannot import it back)."""

    service_names: list[str]
    dynamic: bool
    zone: str | None
    gateway: Gateway

    def policy(self, name: str) -> ServicePolicy: ...


def plan_one(
    name: str,
    instances: tuple[Any, ...],
    fixed: FixedPlan,
    services: ServiceMemo[Planned],
    now: datetime | None,
    observed: Observed,
) -> tuple[Planned, Window]:
    """One (non-split) service's share, from the memo when its entry holds."""
    policy = fixed.policy(name)
    planned = services.get(name, instances, policy, fixed.zone, now)
    if planned is not None:
        return planned, services.window(name) or ALWAYS
    planned, window, keys = plan_service(name, instances, policy, fixed.zone, now, observed)
    services.put(name, instances, policy, fixed.zone, window, keys, planned)
    return planned, window


def missing_note(name: str) -> str:
    return f"service {name!r}: not in the registry; its routes answer 503"


def dead_note(name: str) -> str:
    return f"service {name!r}: no live instance; its routes answer 503"


class LastPass:
    """Each service's share of the last plan made with one memo (see the module doc)."""

    def __init__(self, fixed: FixedPlan) -> None:
        self.fixed = fixed
        self.index = {n: i for i, n in enumerate(fixed.service_names)}
        self.instances: dict[str, tuple[Any, ...]] = {}
        self.notes: dict[int, tuple[str, ...]] = {}  # by spec position: notes keep its order
        self.refused: dict[int, tuple[str, ...]] = {}
        self.changes: dict[str, tuple[datetime, ...]] = {}
        self.standings: dict[str, tuple[Standing, ...]] = {}
        self.upstreams: dict[str, Upstream] = {}
        # Dynamic upstreams by service (no splits: each service has one of its own name),
        # and the peers each refuses, by spec position.
        self.dynamic: dict[str, Upstream] = {}
        self.dynamic_notes: dict[int, tuple[str, ...]] = {}
        self.changed: set[str] = set()  # the services the last `update` re-planned
        self.seen: Mapping[str, tuple[Any, ...]] | None = None  # the services last planned
        self.window = ALWAYS
        self._reorder = False  # a service gained standings out of spec order

    @staticmethod
    def eligible(fixed: FixedPlan) -> bool:
        return fixed.dynamic and not fixed.gateway.split

    def holds(self, fixed: FixedPlan, now: datetime | None) -> bool:
        w = self.window
        return self.fixed is fixed and not w.clockless and w.holds(now)

    def record(
        self,
        name: str,
        instances: tuple[Any, ...] | None,
        planned: Planned | None,
        window: Window,
    ) -> None:
        i = self.index[name]
        if instances is None or planned is None:
            self.instances.pop(name, None)
            self.notes[i] = (missing_note(name),)
            self.refused.pop(i, None)
            self.changes.pop(name, None)
            self.standings.pop(name, None)
            self.upstreams.pop(name, None)
            return
        self.instances[name] = instances
        notes = planned.notes if planned.upstream is not None else (*planned.notes, dead_note(name))
        keep_nonempty(self.notes, i, notes)
        keep_nonempty(self.refused, i, planned.refused)
        keep_nonempty(self.changes, name, planned.changes)
        if name not in self.standings and self.standings:
            self._reorder = True
        self.standings[name] = planned.standings
        if planned.upstream is None:
            self.upstreams.pop(name, None)
        else:
            self.upstreams[name] = planned.upstream
        if window.start is not None or window.end is not None or window.never or window.clockless:
            self.window = intersect((self.window, window))

    def update(
        self,
        current: Mapping[str, tuple[Any, ...]],
        services: ServiceMemo[Planned],
        now: datetime | None,
        observed: Observed,
    ) -> bool:
        """Re-plan the services that changed since the last pass (after `services.sync`).
        False: the memo lost a service it did not look at again; plan them all."""
        old = self.instances
        names = changed_since(current, self.seen)  # the map may say (model/catalog.py)
        if names is None:
            changed = {n for n, insts in current.items() if old.get(n) is not insts}
            changed |= old.keys() - current.keys()
        else:
            changed = {n for n in names if old.get(n) is not current.get(n)}
        self.seen = current
        changed |= services.evicted
        services.evicted = set()
        index = self.index
        self.changed = {n for n in changed if n in index}  # (`& index.keys()` copies them)
        for name in sorted(self.changed, key=index.__getitem__):
            instances = current.get(name)
            if instances is None:
                self.record(name, None, None, ALWAYS)
                continue
            planned, window = plan_one(name, instances, self.fixed, services, now, observed)
            self.record(name, instances, planned, window)
        return not services.evicted and not services.cleared

    def note_list(self) -> list[str]:
        return [n for i in sorted(self.notes) for n in self.notes[i]]

    def refused_list(self) -> list[str]:
        return [r for i in sorted(self.refused) for r in self.refused[i]]

    def change_list(self) -> list[datetime]:
        return [c for cs in self.changes.values() for c in cs]

    def standings_copy(self) -> dict[str, tuple[Standing, ...]]:
        """A copy for the plan (this one changes with the next pass), in spec order."""
        if self._reorder:
            st = self.standings
            self.standings = {n: st[n] for n in self.fixed.service_names if n in st}
            self._reorder = False
        return dict(self.standings)


def keep_nonempty(d: dict[Any, Any], key: Any, value: tuple[Any, ...]) -> None:
    """d[key] = value, or no entry for an empty value (the shares hold few of them)."""
    if value:
        d[key] = value
    else:
        d.pop(key, None)
