"""Graceful start: the weight math of the warm-up ramp. Pure functions, no clock reads.

A ramping instance serves `step_percent` of its weight during its first `period`, one
more step during each following period, and its full weight from the period in which the
steps reach 100 % (with the defaults, 10 % … 100 % over ten periods). nginx weights are
integers, so while any instance of an upstream ramps, every weight in that upstream is
multiplied by the same factor: a base weight of 1 can still take 10 % steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..model.catalog import MAX_WEIGHT, Instance, instance_key
from ..model.observed import Observed
from ..spec import Warmup


@dataclass(frozen=True)
class Ramp:
    fraction: float  # share of the base weight, (0, 1]
    step: int  # 1-based step the instance is in
    steps: int  # steps to full weight
    next_at: datetime | None  # when `fraction` changes next; None once at full weight

    @property
    def ramping(self) -> bool:
        return self.fraction < 1.0


FULL = Ramp(1.0, 1, 1, None)


def ramp_start(inst: Instance, now: datetime, observed: Observed) -> datetime | None:
    """When this instance's ramp began; None when its age is unknown (treated as old).

    registered_at wins over first_seen (the registry knows better than a sidecar that may
    have been down); a registered_at in the future (clock skew) counts as now; a later
    return to service restarts the ramp.
    """
    key = instance_key(inst)
    start = inst.registered_at or observed.first_seen.get(key)
    back = observed.returned.get(key)
    if back is not None and (start is None or back > start):
        start = back
    if start is not None and start > now:
        start = now
    return start


def ramp(warmup: Warmup, start: datetime | None, now: datetime) -> Ramp:
    """Where an instance that started at `start` stands on its ramp at `now`."""
    if not warmup.enabled or start is None:
        return FULL
    steps = math.ceil(100 / warmup.step_percent)
    age = max(0.0, (now - start).total_seconds())
    step = int(age // warmup.period) + 1
    if step >= steps:
        return Ramp(1.0, steps, steps, None)
    next_at = start + timedelta(seconds=step * warmup.period)
    return Ramp(step * warmup.step_percent / 100, step, steps, next_at)


def scale_factor(step_percent: int, max_base_weight: int) -> int:
    """Multiplier that makes `step_percent` of a weight of 1 an integer, within nginx's cap.

    10 % → 10, 25 % → 4, 33 % → 100; lowered so that no weight exceeds MAX_WEIGHT.
    """
    exact = 100 // math.gcd(step_percent, 100)
    return max(1, min(exact, MAX_WEIGHT // max(1, max_base_weight)))


def ramped_weight(base: int, fraction: float, factor: int) -> int:
    """Integer weight for `base` × `fraction` in an upstream scaled by `factor` (>= 1)."""
    return max(1, min(MAX_WEIGHT, round(base * factor * fraction)))
