"""One retry delay for everything that retries a registry: `watch` and the agent.

Capped exponential backoff with jitter: the ceiling doubles from `initial` up to `cap`
and each delay is drawn from the upper half of it (50-100 %), so a fleet of sidecars and
agents does not retry in step against a registry that is coming back.

The exponent stops growing once the ceiling reaches the cap, so an outage of any length
(a day is 2,880 failures at 30 s) costs the same arithmetic as the third failure; the
failure count itself is a plain int and never overflows.
"""

from __future__ import annotations

import random

# From an initial delay of 0 the ceiling still grows towards the cap, from here.
SMALLEST_STEP = 0.001


class Backoff:
    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = max(0.0, float(initial))
        self.cap = max(self.initial, float(cap))
        self.failures = 0  # since the last reset; for logs and tests
        self._ceiling = self.initial
        self._rng = rng or random.Random()

    def next(self) -> float:
        """The delay before the next attempt; call once per failure."""
        ceiling = self._ceiling
        self.failures += 1
        # Doubling a float that is already at the cap is a no-op: no exponent to overflow.
        self._ceiling = min(self.cap, max(ceiling * 2, SMALLEST_STEP))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        """After a success: the next failure waits `initial` again."""
        self.failures = 0
        self._ceiling = self.initial
