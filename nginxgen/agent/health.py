"""Probing the unit: its health URL (rise/fall) and its in-flight request count."""

from __future__ import annotations

import json
from dataclasses import dataclass

import requests

from .base import http_reason


@dataclass(frozen=True)
class Probe:
    ok: bool
    detail: str  # "HTTP 200", "connection refused", ...


def probe(session: requests.Session, url: str, timeout: float) -> Probe:
    """One GET; healthy means a 2xx answer within `timeout`."""
    try:
        r = session.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return Probe(False, http_reason(exc))
    r.close()
    return Probe(200 <= r.status_code < 300, f"HTTP {r.status_code}")


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
