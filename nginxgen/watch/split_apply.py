"""What `watch` does for services.NAME.split: push changed weights instead of reloading,
keep the state file beside nginx.conf current, and run the split guards.

A shift (a registry override, an edited spec after SIGHUP, a version whose last instance
went) changes only the split documents, which nginx.conf does not hold: the rendered text
stays the same and the documents are pushed to the status listener. A push that is
refused or unreachable falls back to a reload, which reads the state file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import requests

from ..deploy.nginx_bin import Binary
from ..deploy.reload import reload_nginx
from ..deploy.split_state import push, state_text, token, write_state
from ..model.catalog import Catalog
from ..model.plan import Plan
from ..registry.errors import RegistryError
from ..registry.shift import OverrideStore, ShiftError
from ..spec import Spec
from ..spec.split import Split
from ..status.traffic import version_counts
from ..util.clock import Clock
from ..util.token_file import TokenFileError
from .split_guard import SplitGuard
from .telemetry import Metrics, event

GUARD_EVERY = 1.0  # seconds between two samples of the per-version counters


class SplitApply:
    def __init__(self, clock: Clock, metrics: Metrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self.guard = SplitGuard()
        self.served: str | None = None  # the state text nginx serves (pushed or reloaded)
        self._next_sample = 0.0
        self._live: dict[str, set[str]] = {}  # per service: the versions served as live

    # --- planning -----------------------------------------------------------------------

    def catalog(self, catalog: Catalog) -> Catalog:
        """The catalog to plan with: the registry's overrides, the guards' pins on top."""
        if not self.guard.pinned:
            return catalog
        return replace(catalog, splits=self.guard.overrides(catalog.splits))

    # --- applying -----------------------------------------------------------------------

    def before_install(self, spec: Spec, plan: Plan) -> None:
        """A reload is coming: nginx's master reads the documents from the state file."""
        write_state(spec.nginx, plan)

    def installed(self, plan: Plan) -> None:
        self.served = state_text(plan) if plan.splits else None
        self._live = _live(plan)

    def retracts(self, plan: Plan) -> bool:
        """Does `plan` take a version out that the documents nginx serves still send to?"""
        now = _live(plan)
        return any(v not in now.get(s, set()) for s, vs in self._live.items() for v in vs)

    def push_if_changed(self, spec: Spec, binary: Binary | None, plan: Plan) -> bool:
        """The config serves as rendered; push the split documents if they changed.
        True when something was pushed (or, failing that, reloaded)."""
        if not plan.splits or spec.nginx.status_listen == "off":
            return False
        text = state_text(plan)
        if text == self.served:
            return False
        write_state(spec.nginx, plan)
        try:
            secret = token(spec.nginx)
        except (TokenFileError, OSError) as exc:
            secret, why = None, str(exc)
        else:
            why = "no token file"
        done = push(spec.nginx.status_listen, secret, plan) if secret else None
        summary = "; ".join(s.summary() for s in plan.splits)
        if done is not None and done.ok:
            self.served = text
            self._live = _live(plan)
            self.metrics.split_pushes.inc()
            event(logging.INFO, f"pushed: {summary} (no reload)")
            for s in plan.splits:
                if s.note:
                    event(logging.INFO, f"note: {s.note}")
            return True
        why = done.error if done is not None else why
        event(logging.WARNING, f"split push failed ({why}); reloading nginx to apply it")
        result = reload_nginx(spec.nginx, binary)
        if result.ok:
            self.served = text
            self._live = _live(plan)
            self.metrics.reloads.labels("spec").inc()
        else:
            event(logging.ERROR, f"reload for the split failed: {result.message}")
        return True

    # --- the guards ---------------------------------------------------------------------

    def guard_due(self, spec: Spec) -> float | None:
        if spec.nginx.status_listen == "off" or not spec.nginx.metrics or not _guards(spec):
            return None
        return self._next_sample

    def check_guards(self, spec: Spec, plan: Plan | None, accepted: Catalog | None) -> bool:
        """Sample /metrics once; True when a guard tripped (the caller re-plans)."""
        now = self.clock.monotonic()
        self._next_sample = now + GUARD_EVERY
        if plan is None:
            return False
        try:
            r = requests.get(f"http://{spec.nginx.status_listen}/metrics", timeout=1.0)
            r.raise_for_status()
            counts = version_counts(r.text)
        except (requests.RequestException, ValueError):
            return False  # nginx busy or restarting: the next sample judges
        in_force = {s.service: dict(s.configured) for s in plan.splits}
        trips = self.guard.observe(now, counts, _guards(spec), in_force)
        for trip in trips:
            before = accepted.splits.get(trip.service) if accepted else None
            self.guard.pin(trip, before)
            self.metrics.split_rollbacks.labels(trip.service, trip.version).inc()
            event(logging.WARNING, str(trip), service=trip.service, version=trip.version)
            try:
                OverrideStore(spec.registry).write(trip.service, trip.override)
            except (ShiftError, RegistryError, OSError) as exc:
                event(logging.WARNING, f"split guard: override not written ({exc}); pinned here")
        return bool(trips)


def _live(plan: Plan) -> dict[str, set[str]]:
    return {s.service: {v for v, bp in s.effective if bp > 0} for s in plan.splits}


def _guards(spec: Spec) -> Mapping[str, Split]:
    return {n: p.split for n, p in spec.services.items() if p.split and p.split.guard}
