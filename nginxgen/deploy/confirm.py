"""Which config generation the running workers serve, asked on the loopback status listener."""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from ..util.clock import Clock

STATUS_PATH = "/nginxgen/generation"


def serving_generation(status_listen: str, timeout: float = 1.0) -> str | None:
    """The generation the workers answering the status listener loaded, or None."""
    host, _, port = status_listen.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", STATUS_PATH, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(64).decode("ascii", "replace").strip()
        return body if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class Confirmation:
    ok: bool
    seen: str | None  # the last generation the status listener answered
    waited: float


def confirm_generation(
    status_listen: str, generation: str, timeout: float, clock: Clock | None = None
) -> Confirmation:
    """Poll until the status listener answers `generation` or `timeout` passes.

    Old workers keep accepting for a moment after a reload, so one answer from the old
    generation proves nothing; only the deadline does.
    """
    clock = clock or Clock()
    start = clock.monotonic()
    seen = None
    while True:
        seen = serving_generation(status_listen)
        waited = clock.monotonic() - start
        if seen == generation:
            return Confirmation(True, seen, waited)
        if waited >= timeout:
            return Confirmation(False, seen, waited)
        clock.sleep(0.02)
