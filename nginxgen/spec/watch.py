"""`watch:` — the sidecar loop's debounce, backoff, removal guard, flap damping and
health port."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    Field,
    model_validator,
)
from pydantic.functional_validators import AfterValidator

from .fields import Duration, Model


class Debounce(Model):
    """Apply once the registry has been quiet for `min`, but never later than `max`."""

    min: Duration = 0.2
    max: Duration = 2.0

    @model_validator(mode="after")
    def _order(self) -> Debounce:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}s) must not be shorter than min ({self.min}s)")
        return self


class Backoff(Model):
    """Retry delay after registry errors: doubles from `initial` up to `max`, with jitter."""

    initial: Duration = 0.5
    max: Duration = 30.0


class RemovalGuard(Model):
    """Hold reads that suddenly empty a service or remove more than `max_removed_share`
    of it, until `confirm_reads` consecutive reads over `confirm_period` agree."""

    max_removed_share: float = Field(0.5, ge=0.0, le=1.0)
    confirm_reads: int = Field(3, ge=1)
    confirm_period: Duration = 10.0


class Flap(Model):
    """Flap damping: an instance that turns between serving and not serving more than
    `changes` times within `window` is held out of nginx (or in, when it is the last one
    its service has) until it has stayed the same for `hold`. `flap: off` turns it off."""

    enabled: bool = True
    changes: int = Field(3, ge=1)
    window: Duration = Field(30.0, gt=0)
    hold: Duration = Field(30.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return {"enabled": False} if v in ("off", False) else v


def _host_port_or_off(v: str) -> str:
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", v)
    if v != "off" and (not m or not 1 <= int(m.group(2)) <= 65535):
        raise ValueError(f"must be host:port such as 127.0.0.1:9180, or off: {v!r}")
    return v


class WatchSpec(Model):
    debounce: Debounce = Debounce()
    backoff: Backoff = Backoff()
    guard: RemovalGuard = RemovalGuard()
    flap: Flap = Flap()
    # /healthz and /metrics. Loopback by default; 0.0.0.0:9180 lets Prometheus scrape a pod.
    listen: Annotated[str, AfterValidator(_host_port_or_off)] = "127.0.0.1:9180"
    confirm_timeout: Duration = 10.0  # how long a reload may take to serve the new config
    # nginx.endpoints dynamic: a push is cheap, so it waits a much shorter quiet period
    # than a reload; a burst of registry events still becomes one push.
    push_debounce: Debounce = Debounce(min=0.03, max=0.5)
    # How long every worker may take to serve a pushed generation; then `watch` reloads.
    push_confirm_timeout: Duration = Field(2.0, gt=0)
    # Read the registry in full at least this often even without a change signal, so a
    # registry that broke silently (deleted file, lost watch) shows up as stale.
    resync: Duration = 30.0
