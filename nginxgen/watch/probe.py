"""Pseudo-dead detection: nginxgen probes each instance's health endpoint itself.

A registry heartbeat says the process is alive; it does not say the application answers.
After `fall` consecutive failed probes an instance is reported dead (the plan keeps it
out of its upstream), after `rise` consecutive successes it is alive again (and ramps
back in through the warm-up). The plan, not the prober, refuses to take a whole service
down on probe evidence alone.

Probes run concurrently on a thread pool, each instance on its own cadence, so one hung
instance costs one thread for `timeout`, never the others' schedule.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import requests

from ..model.catalog import LIVE_STATES, Catalog, instance_key
from ..spec import Probe, Recovery, Spec

log = logging.getLogger("nginxgen.probe")


@dataclass(frozen=True)
class Target:
    key: str
    service: str
    instance_id: str
    address: str
    probe: Probe

    @property
    def url(self) -> str:
        return f"http://{self.address}{self.probe.path}"


@dataclass
class _Track:
    target: Target
    failures: int = 0  # consecutive
    successes: int = 0  # consecutive
    dead: bool = False
    dead_since: datetime | None = None
    last_error: str = ""
    next_due: float = 0.0
    in_flight: bool = False
    hooked_at: float | None = None  # monotonic time of the last recovery hook


@dataclass(frozen=True)
class HookRun:
    key: str
    action: str  # "command" or "url"
    ok: bool
    detail: str


@dataclass
class ProbeStatus:
    key: str
    dead: bool
    failures: int
    successes: int
    last_error: str


def check(target: Target) -> str:
    """Probe once; '' when healthy, else why not (one short line)."""
    p = target.probe
    try:
        with requests.Session() as s:
            s.trust_env = False  # instances are reached directly, never through a proxy
            r = s.get(
                target.url,
                timeout=(p.timeout, p.timeout),
                allow_redirects=False,
                headers={"Connection": "close", "User-Agent": "nginxgen-probe"},
            )
    except requests.Timeout:
        return f"no answer within {p.timeout:g}s"
    except requests.RequestException as exc:
        return f"connection failed: {type(exc).__name__}"
    if r.status_code not in p.expect_status:
        return f"HTTP {r.status_code} from {p.path}"
    return ""


class Prober:
    """Probes the live instances of the routed services that have `probe` enabled.

    The watch loop calls `update(catalog)` after each registry read, `dead()` when it
    plans, and waits on `changed` (set whenever the dead set changes) to re-plan early.
    """

    def __init__(
        self,
        spec: Spec,
        *,
        clock: Callable[[], float] = time.monotonic,
        checker: Callable[[Target], str] = check,
        max_workers: int = 16,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.checker = checker
        self.changed = threading.Event()
        self.hook_runs: list[HookRun] = []
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the loop calls ---------------------------------------------------------

    def update(self, catalog: Catalog) -> None:
        """Probe exactly the `up` instances of routed services with probing on."""
        targets: dict[str, Target] = {}
        for name in self.spec.service_names:
            probe = self.spec.service_policy(name).probe
            if not probe.enabled:
                continue
            for inst in catalog.services.get(name, ()):
                if inst.state in LIVE_STATES:
                    key = instance_key(inst)
                    targets[key] = Target(key, name, inst.id, inst.address, probe)
        with self._lock:
            gone_dead = any(t.dead for k, t in self._tracks.items() if k not in targets)
            tracks = {}
            for key, target in targets.items():
                track = self._tracks.get(key) or _Track(target, next_due=self.clock())
                track.target = target
                tracks[key] = track
            self._tracks = tracks
        if gone_dead:
            self.changed.set()
        self._wake.set()

    def dead(self) -> frozenset[str]:
        """Keys (service/id@address) of instances held out as pseudo-dead."""
        with self._lock:
            return frozenset(k for k, t in self._tracks.items() if t.dead)

    def status(self) -> list[ProbeStatus]:
        with self._lock:
            return [
                ProbeStatus(k, t.dead, t.failures, t.successes, t.last_error)
                for k, t in sorted(self._tracks.items())
            ]

    def probe_all(self) -> None:
        """Probe every target once, now, and wait for all answers (tests, one-shot use)."""
        with self._lock:
            tracks = [t for t in self._tracks.values() if not t.in_flight]
            for t in tracks:
                t.in_flight = True
        wait([self._pool.submit(self._probe, t) for t in tracks])

    def start(self) -> Prober:
        """Probe in the background, each instance every `interval`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- inside -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            with self._lock:
                due = [t for t in self._tracks.values() if not t.in_flight and t.next_due <= now]
                for t in due:
                    t.in_flight = True
                pending = [t.next_due for t in self._tracks.values() if not t.in_flight]
            for t in due:
                self._pool.submit(self._probe, t)
            delay = min(pending, default=now + 1.0) - now
            self._wake.wait(max(0.01, min(delay, 1.0)))
            self._wake.clear()

    def _probe(self, track: _Track) -> None:
        started = self.clock()
        try:
            error = self.checker(track.target)
        except Exception as exc:  # a checker bug must not kill the prober
            error = f"probe error: {exc}"
        self._record(track, error, started)

    def _record(self, track: _Track, error: str, started: float) -> None:
        hook: Recovery | None = None
        p = track.target.probe
        with self._lock:
            track.in_flight = False
            track.next_due = started + p.interval
            track.last_error = error
            flipped = False
            if error:
                track.failures += 1
                track.successes = 0
                if not track.dead and track.failures >= p.fall:
                    track.dead, track.dead_since, flipped = True, datetime.now(timezone.utc), True
                    log.warning(
                        "service %r instance %r (%s): pseudo-dead after %d failed probes (%s); "
                        "kept out of its upstream",
                        track.target.service,
                        track.target.instance_id,
                        track.target.address,
                        track.failures,
                        error,
                    )
                    self._warn_if_service_down(track.target.service)
                r = p.recovery
                if (
                    r is not None
                    and track.failures >= r.after
                    and (track.hooked_at is None or started - track.hooked_at >= r.cooldown)
                ):
                    track.hooked_at, hook = started, r
            else:
                track.successes += 1
                track.failures = 0
                if track.dead and track.successes >= p.rise:
                    track.dead, track.dead_since, flipped = False, None, True
                    log.warning(
                        "service %r instance %r (%s): healthy again after %d probes; "
                        "back in its upstream",
                        track.target.service,
                        track.target.instance_id,
                        track.target.address,
                        track.successes,
                    )
            payload = _describe(track)
        self._wake.set()  # the scheduler sleeps until this instance's next probe is known
        if flipped:
            self.changed.set()
        if hook is not None and not self._stop.is_set():
            self._pool.submit(self._run_hook, hook, payload)

    def _warn_if_service_down(self, service: str) -> None:
        tracks = [t for t in self._tracks.values() if t.target.service == service]
        if tracks and all(t.dead for t in tracks):
            log.warning(
                "service %r: every instance fails its health probe; keeping them all in "
                "(probe evidence alone never takes a whole service down)",
                service,
            )

    def _run_hook(self, recovery: Recovery, payload: dict[str, Any]) -> None:
        key = payload["key"]
        body = json.dumps(payload)
        if recovery.command is not None:
            env = {
                **os.environ,
                "NGINXGEN_SERVICE": payload["service"],
                "NGINXGEN_INSTANCE": payload["instance"],
                "NGINXGEN_ADDRESS": payload["address"],
            }
            try:
                done = subprocess.run(
                    list(recovery.command),
                    input=body,
                    text=True,
                    capture_output=True,
                    env=env,
                    timeout=recovery.timeout,
                )
                run = HookRun(key, "command", done.returncode == 0, f"exit {done.returncode}")
            except (OSError, subprocess.TimeoutExpired) as exc:
                run = HookRun(key, "command", False, str(exc))
        else:
            assert recovery.url is not None
            try:
                with requests.Session() as s:
                    s.trust_env = False
                    r = s.post(
                        recovery.url,
                        data=body,
                        headers={"Content-Type": "application/json"},
                        timeout=recovery.timeout,
                    )
                run = HookRun(key, "url", r.ok, f"HTTP {r.status_code}")
            except requests.RequestException as exc:
                run = HookRun(key, "url", False, type(exc).__name__)
        (log.info if run.ok else log.warning)(
            "recovery hook for %s (%s): %s", key, run.action, run.detail
        )
        with self._lock:
            self.hook_runs.append(run)


def _describe(track: _Track) -> dict[str, Any]:
    t = track.target
    return {
        "event": "pseudo_dead",
        "key": t.key,
        "service": t.service,
        "instance": t.instance_id,
        "address": t.address,
        "health_url": t.url,
        "failures": track.failures,
        "last_error": track.last_error,
        "dead_since": track.dead_since.isoformat() if track.dead_since else None,
    }
