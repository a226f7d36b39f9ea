"""The traffic policies' moving parts, held by the watch loop between passes.

policies = Policies(spec).start()
...each pass:
    observed = policies.observe(catalog, now)       # prober targets + state file
    result = pipeline.build(spec, catalog, binary=..., now=now, observed=observed)
    ...install + reload...
    policies.installed()                            # persist first-seen times
    wake at result.plan.next_change_at (warm-up step), or when policies.changed is set
"""

from __future__ import annotations

import threading
from datetime import datetime

from .catalog import Catalog
from .policy_state import PolicyState, state_path
from .probe import Prober
from .spec import Spec
from .warmup import Observed


class Policies:
    def __init__(self, spec: Spec, *, state: PolicyState | None = None) -> None:
        self.spec = spec
        self.state = state if state is not None else PolicyState(state_path(spec))
        probing = any(spec.service_policy(n).probe.enabled for n in spec.service_names)
        self.prober: Prober | None = Prober(spec) if probing else None
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

    def installed(self) -> None:
        """Call after a config built from the last `observe` was installed."""
        self.state.save()

    def close(self) -> None:
        if self.prober:
            self.prober.stop()
