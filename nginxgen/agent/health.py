"""Probing the unit: its health check (http, https or tcp; rise/fall) and its in-flight
request count. The checks themselves are nginxgen.util.checks, shared with the gateway."""

from __future__ import annotations

import json
import time

import requests

from ..util.checks import CheckResult, Clock, check_http, check_tcp, tls_context
from .base import HealthCheck


class Checker:
    """The configured check (http, https or tcp), ready to run: the TLS context is built
    once, not per probe. Raises OSError / ssl.SSLError when the CA file is unusable."""

    def __init__(self, check: HealthCheck, clock: Clock = time.monotonic) -> None:
        self.check = check
        self.clock = clock
        self.context = tls_context(check.ca, not check.insecure) if check.kind == "https" else None

    def __call__(self, timeout: float) -> CheckResult:
        c = self.check
        if c.kind == "tcp":
            return check_tcp(c.host, c.port, timeout, clock=self.clock)
        assert c.url is not None
        return check_http(c.url, timeout, context=self.context, sni=c.sni, clock=self.clock)


class HealthTracker:
    """Turns single probes into a verdict that only flips after `rise` successes or
    `fall` failures in a row, so one slow answer does not pull a unit out of rotation."""

    def __init__(self, rise: int, fall: int, healthy: bool | None = None) -> None:
        self.rise, self.fall = rise, fall
        self.healthy = healthy  # None: no verdict yet
        self.streak = 0  # consecutive probes that disagree with the verdict

    def observe(self, ok: bool) -> bool:
        """Record one probe; True when the verdict changed."""
        if self.healthy is ok:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak >= (self.rise if ok else self.fall):
            self.healthy, self.streak = ok, 0
            return True
        return False


def parse_inflight(body: str) -> int | None:
    """`3`, `3\\n` or `{"inflight": 3}` → 3; anything else → None (unknown)."""
    text = body.strip()
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = value.get("inflight")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(value)


def inflight(session: requests.Session, url: str, timeout: float) -> int | None:
    try:
        r = session.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return None
    return parse_inflight(r.text) if r.status_code == 200 else None
