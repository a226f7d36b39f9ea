"""`nginxgen watch`, the sidecar: the loop (loop.py: waits, debounce, backoff, signals) and
one apply (apply.py: guard, observe, build, install, record), with what they remember
between passes: the removal guard (guard.py), flap damping (flap.py), probes (probe.py),
the traffic policies and their state file (policies.py, policy_state.py), what the
sidecar tells the world (telemetry.py) and what changed (diff.py)."""

from __future__ import annotations

from .apply import Applier, Outcome, Result
from .loop import ListenError, Options, Watcher

__all__ = ["Applier", "ListenError", "Options", "Outcome", "Result", "Watcher"]
