"""The traffic policies' moving parts, held by the watch loop between passes.

policies = Policies(spec).start()
...each pass (watch/apply.py):
    observed = policies.observe(catalog, now)       # prober targets + state file
    result = pipeline.build(spec, catalog, ..., now=now, observed=observed)
    ...install + reload...
    policies.installed(dead, old_workers)           # persist first-seen times
    wake at result.plan.next_change_at (warm-up step), or when policies.changed is set
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from ..deploy.workers import Worker
from ..model.catalog import Catalog
from ..model.observed import Observed
from ..model.plan import Plan
from ..spec import Probe, Spec
from ..util.clock import Clock
from .policy_state import PolicyState, state_path
from .probe import Prober
from .recovery import HookRun

# The plan's note for an instance on its ramp (plan/service.py writes it; the README shows it).
WARMING_NOTE = ": warming up, step "


class Policies:
    def __init__(
        self,
        spec: Spec,
        *,
        state: PolicyState | None = None,
        clock: Clock | None = None,
        on_recovery: Callable[[HookRun], None] = lambda run: None,
    ) -> None:
        self.spec = spec
        self.state = state if state is not None else PolicyState(state_path(spec))
        probing = any(spec.service_policy(n).probe.enabled for n in spec.service_names)
        monotonic = (clock or Clock()).monotonic
        self.prober: Prober | None = (
            Prober(spec, clock=monotonic, on_recovery=on_recovery) if probing else None
        )
        # Set when the prober's dead set changes: re-plan without waiting for the registry.
        self.changed = self.prober.changed if self.prober else threading.Event()

    def start(self) -> Policies:
        if self.prober:
            self.prober.start()
        return self

    def observe(self, catalog: Catalog, now: datetime) -> Observed:
        """Feed the prober the catalog and record what is seen; the plan's `observed`."""
        self.changed.clear()
        dead: frozenset[str] = frozenset()
        if self.prober:
            self.prober.update(catalog)
            dead = self.prober.dead()
        return self.state.observe(catalog, now, dead)

    def installed(self, dead: frozenset[str], old_workers: frozenset[Worker] = frozenset()) -> None:
        """Call once a config built from the last `observe` serves; `dead` are the
        pseudo-dead keys it keeps out, `old_workers` the nginx processes from before its
        reload (their agents may be asked to restart them once those are gone)."""
        self.state.save()
        if self.prober:
            self.prober.served_without(dead, old_workers)

    def probe_errors(self) -> dict[str, str]:
        """Instance key → the last probe error, for the pseudo-dead ones (/status)."""
        if not self.prober:
            return {}
        return {p.key: p.last_error for p in self.prober.status() if p.dead}

    def close(self) -> None:
        if self.prober:
            self.prober.stop()

    @property
    def probe_interval(self) -> float | None:
        """The shortest probe interval of any routed service; None when nothing probes."""
        intervals = [p.interval for p in _probes(self.spec).values() if p.enabled]
        return min(intervals, default=None)

    def reusable_for(self, spec: Spec) -> bool:
        """Can a reloaded spec keep this object (and its probe history)?

        Only when the probes and the state file stay the same: keeping them means a
        SIGHUP does not let a pseudo-dead instance back in while it is probed afresh.
        """
        return _probes(spec) == _probes(self.spec) and state_path(spec) == state_path(self.spec)

    def adopt(self, spec: Spec) -> None:
        """Carry on under a reloaded spec that `reusable_for` accepted."""
        self.spec = spec
        if self.prober:
            self.prober.spec = spec


def warming_count(plan: Plan) -> int:
    """Instances the plan keeps on a warm-up ramp (one note each)."""
    return sum(WARMING_NOTE in note for note in plan.notes)


def _probes(spec: Spec) -> dict[str, Probe]:
    return {n: spec.service_policy(n).probe for n in spec.service_names}
