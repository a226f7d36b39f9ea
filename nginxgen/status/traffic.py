"""Requests and 5xx per upstream peer over the last minute, from samples of nginx's
/metrics (`nginxgen_upstream_requests_total{service,peer,status}`).

The sidecar samples every few seconds and keeps a little more than a window of samples;
the answer is the latest sample minus the newest one at least a window old (or the oldest
there is, with the span it covers, while the sidecar is younger than a window). A counter
that went down means nginx restarted: its whole current value counts as new.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

PeerKey = tuple[str, str]  # (service, peer)
SERIES = "nginxgen_upstream_requests_total"


@dataclass(frozen=True)
class Counts:
    requests: float = 0.0
    errors: float = 0.0  # status class 5xx


@dataclass(frozen=True)
class Window:
    seconds: float  # the span the counts cover (less than asked while history is short)
    peers: dict[PeerKey, Counts]


def peer_counts(text: str) -> dict[PeerKey, Counts]:
    """Per (service, peer): attempts and 5xx answers since nginx started."""
    out: dict[PeerKey, Counts] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != SERIES or "peer" not in s.labels:
                continue
            key = (s.labels.get("service", ""), s.labels["peer"])
            c = out.get(key, Counts())
            err = s.value if s.labels.get("status") == "5xx" else 0.0
            out[key] = Counts(c.requests + s.value, c.errors + err)
    return out


class PeerTraffic:
    """Samples of per-peer counters, and their difference over a window. One thread
    adds (the sidecar's sampler), others read (/status): hence the lock."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.samples: deque[tuple[float, dict[PeerKey, Counts]]] = deque()
        self._lock = threading.Lock()

    def add(self, now: float, counts: dict[PeerKey, Counts]) -> None:
        with self._lock:
            self.samples.append((now, counts))
            # Keep the newest sample at least a window old, drop the ones before it.
            while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
                self.samples.popleft()

    def latest(self) -> float | None:
        """When the newest sample was taken (None: none yet)."""
        with self._lock:
            return self.samples[-1][0] if self.samples else None

    def last(self) -> Window:
        """The counts over the window (or over what history there is)."""
        return self.over(self.window)

    def over(self, seconds: float) -> Window:
        """The counts from the newest sample at least `seconds` old (or the oldest) to
        the latest; `seconds` up to the window."""
        with self._lock:
            if not self.samples:
                return Window(0.0, {})
            now, new = self.samples[-1]
            then, old = self.samples[0]
            for at, counts in reversed(self.samples):
                if at <= now - seconds:
                    then, old = at, counts
                    break
        peers = {}
        for key, c in new.items():
            o = old.get(key, Counts())
            if c.requests < o.requests:  # nginx restarted: everything counted is new
                o = Counts()
            peers[key] = Counts(c.requests - o.requests, c.errors - o.errors)
        return Window(now - then, peers)


VERSION_SERIES = "nginxgen_requests_total"


def version_counts(text: str) -> dict[PeerKey, Counts]:
    """Per (service, version): answers and 5xx answers since nginx started, all routes."""
    out: dict[PeerKey, Counts] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != VERSION_SERIES or "version" not in s.labels:
                continue
            key = (s.labels.get("service", ""), s.labels["version"])
            c = out.get(key, Counts())
            err = s.value if s.labels.get("status") == "5xx" else 0.0
            out[key] = Counts(c.requests + s.value, c.errors + err)
    return out
