"""The sidecar's reading of nginx's /metrics: per-peer counters sampled every few seconds
into a PeerTraffic (status/traffic.py), for the requests and 5xx of the last minute in
/status and for the passive failures read from them (watch/instances.py)."""

from __future__ import annotations

import http.client
import logging
import threading
from collections.abc import Callable

from ..status.traffic import PeerTraffic, peer_counts
from ..util.clock import Clock

log = logging.getLogger("nginxgen.watch")

# Between two samples: a minute's window holds a dozen, and a scrape costs nginx one
# render of its metrics text (kept for a second, so another scraper shares it).
SAMPLE_EVERY = 5.0
SAMPLE_TIMEOUT = 2.0


def scrape(status_listen: str, timeout: float = SAMPLE_TIMEOUT) -> str | None:
    """nginx's /metrics text, or None when it does not answer with one."""
    host, _, port = status_listen.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        return body.decode("utf-8", "replace") if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class TrafficSampler:
    """Samples on a daemon thread until stopped. `listen` is asked each time (None: the
    spec has metrics off), so a reloaded spec is followed."""

    def __init__(
        self,
        listen: Callable[[], str | None],
        traffic: PeerTraffic,
        *,
        clock: Clock,
        every: float = SAMPLE_EVERY,
        on_sample: Callable[[], None] = lambda: None,
    ) -> None:
        self.listen, self.traffic, self.clock, self.every = listen, traffic, clock, every
        self.on_sample = on_sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nginxgen-sampler", daemon=True)
        self._failing = False

    def sample(self) -> bool:
        """One sample now; False when nginx gave none (stopped, metrics off)."""
        listen = self.listen()
        text = scrape(listen) if listen else None
        if text is None:
            return False
        try:
            counts = peer_counts(text)
        except ValueError as exc:  # not Prometheus text: say so once per bad spell
            if not self._failing:
                log.warning("nginx's /metrics on %s does not parse: %s", listen, exc)
            self._failing = True
            return False
        self._failing = False
        self.traffic.add(self.clock.monotonic(), counts)
        return True

    def start(self) -> TrafficSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(SAMPLE_TIMEOUT + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
                self.on_sample()
            except Exception:  # noqa: BLE001 - a sampling bug must not end the sidecar
                log.exception("sampling nginx's /metrics failed")
            self._stop.wait(self.every)
