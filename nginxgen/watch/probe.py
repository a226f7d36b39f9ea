"""Pseudo-dead detection: nginxgen probes each instance's health endpoint itself.

A registry heartbeat says the process is alive; it does not say the application answers.
After `fall` consecutive failed probes an instance is reported dead (the plan keeps it
out of its upstream), after `rise` consecutive successes it is alive again (and ramps
back in through the warm-up). The plan, not the prober, refuses to take a whole service
down on probe evidence alone.

Probes run concurrently on a thread pool, each instance on its own cadence, so one hung
instance costs one thread for `timeout`, never the others' schedule. A probe is an HTTP or
HTTPS GET of `path`, or a TCP connect (`kind`), made by nginxgen.util.checks, the checks
the agent runs on its unit.

After `recovery.after` failures the prober acts (watch/recovery.py): a command, a POST to a
control center, or a restart through the instance's own agent. An agent is asked only
while the instance is held out as pseudo-dead and another instance of its service passes
its probes: a probe that is wrong for every instance must not restart them all.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..agent.base import CONTROL_META
from ..deploy import workers
from ..deploy.workers import Worker
from ..model.catalog import LIVE_STATES, Catalog, instance_key
from ..spec import Probe, Recovery, Spec
from ..util.checks import check_http, check_tcp, tls_context
from ..util.token_file import TokenFileError, read_token
from . import recovery as recoveries
from .recovery import HookRun

log = logging.getLogger("nginxgen.probe")

# How long the time of a recovery is kept for an instance that left the registry (the
# cooldown holds when it comes back): longer than any sensible cooldown.
HOOKED_KEPT = 86400.0
# The longest an agent's restart waits for nginx workers from before the reload to exit:
# nginx's default proxy_read_timeout, how long an old worker waits on a hung unit before
# it fails the request over. Past it the workers left hold long-lived connections.
OLD_WORKERS_WAIT = 60.0


@dataclass(frozen=True)
class Target:
    key: str
    service: str
    instance_id: str
    address: str
    probe: Probe
    control: str | None = None  # meta.nginxgen_control: where its agent listens
    # https: built once per (ca, verify) by the prober, not per probe
    context: ssl.SSLContext | None = field(default=None, compare=False)

    @property
    def url(self) -> str:
        if self.probe.kind == "tcp":
            return f"tcp://{self.address}"
        return f"{self.probe.kind}://{self.address}{self.probe.path}"


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
    held_said: bool = False  # the agent was not called (no other instance passes): logged


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
    if p.kind == "tcp":
        host, _, port = target.address.rpartition(":")
        result = check_tcp(host.strip("[]"), int(port), p.timeout)
        return "" if result.ok else result.detail
    result = check_http(
        target.url, p.timeout, context=target.context, sni=p.sni, expect=p.expect_status
    )
    if result.ok:
        return ""
    return f"{result.detail} from {p.path}" if result.detail.startswith("HTTP ") else result.detail


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
        on_recovery: Callable[[HookRun], None] = lambda run: None,
        alive: Callable[[frozenset[Worker]], frozenset[Worker]] = workers.alive,
    ) -> None:
        self.spec = spec
        self.alive = alive  # which of some nginx processes still run
        self.clock = clock
        self.checker = checker
        self.on_recovery = on_recovery  # e.g. counts nginxgen_recoveries_total{result}
        self._contexts: dict[tuple[str | None, bool], ssl.SSLContext] = {}
        # Pseudo-dead keys the serving config keeps out (None: nobody reports it).
        self._served_without: frozenset[str] | None = None
        # nginx processes from before the reloads that served it, and since when they are
        # waited for: until they exit they may send requests by an older config.
        self._old_workers: dict[Worker, float] = {}
        self._hooked: dict[str, float] = {}  # last recovery per key, across re-registrations
        self._check_token_files()
        self.changed = threading.Event()
        self.hook_runs: list[HookRun] = []
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="probe")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def _check_token_files(self) -> None:
        """Say at start, not at the first pseudo-dead instance, that a token file is
        unusable; each call reads it again, so fixing it needs no restart."""
        files: dict[str, list[str]] = {}
        for name in self.spec.service_names:
            r = self.spec.service_policy(name).probe.recovery
            if r is not None and r.agent and r.token_file:
                files.setdefault(r.token_file, []).append(name)
        for path, services in files.items():
            try:
                read_token(path, f"probe.recovery.token_file {path}")
            except TokenFileError as exc:
                log.warning(
                    "%s; restarts through the agents of %s fail until it is fixed",
                    exc,
                    ", ".join(repr(s) for s in services),
                )

    # --- what the loop calls ---------------------------------------------------------

    def update(self, catalog: Catalog) -> None:
        """Probe exactly the `up` instances of routed services with probing on."""
        targets: dict[str, Target] = {}
        for name in self.spec.service_names:
            probe = self.spec.service_policy(name).probe
            if not probe.enabled:
                continue
            context = self._context(probe)
            for inst in catalog.services.get(name, ()):
                if inst.state in LIVE_STATES:
                    key = instance_key(inst)
                    control = inst.meta_dict.get(CONTROL_META)
                    targets[key] = Target(key, name, inst.id, inst.address, probe, control, context)
        with self._lock:
            gone_dead = any(t.dead for k, t in self._tracks.items() if k not in targets)
            tracks = {}
            for key, target in targets.items():
                track = self._tracks.get(key) or _Track(
                    target,
                    next_due=self.clock(),
                    # An instance that comes back (its agent restarted it) keeps its
                    # cooldown: at most one recovery per instance per cooldown.
                    hooked_at=self._hooked.get(key),
                )
                track.target = target
                tracks[key] = track
            self._tracks = tracks
            now = self.clock()
            self._hooked = {
                k: t for k, t in self._hooked.items() if k in tracks or now - t < HOOKED_KEPT
            }
        if gone_dead:
            self.changed.set()
        self._wake.set()

    def _context(self, probe: Probe) -> ssl.SSLContext | None:
        """The TLS context for an https probe; a CA file that cannot be read leaves the
        probe without one (its checks then fail and say why), once per file, logged."""
        if probe.kind != "https":
            return None
        key = (probe.ca, probe.verify)
        if key not in self._contexts:
            try:
                self._contexts[key] = tls_context(probe.ca, probe.verify)
            except (OSError, ssl.SSLError) as exc:
                log.warning("probe.ca %s: not a readable PEM CA file (%s)", probe.ca, exc)
                return None
        return self._contexts[key]

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
        held = False
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
                    if not r.agent:
                        track.hooked_at, hook = started, r
                        self._hooked[track.target.key] = started
                    else:
                        hook, held = self._agent_due(track, started)
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
        if held:
            self._report(_held(track))
        if hook is not None and not self._stop.is_set():
            self._pool.submit(self._run_hook, hook, payload, track.target.control)

    def served_without(
        self, keys: frozenset[str], old_workers: frozenset[Worker] = frozenset()
    ) -> None:
        """The watch loop: the config nginx serves now keeps `keys` (pseudo-dead) out;
        `old_workers` are the nginx processes from before its reload.

        From the first call on, an instance's agent is asked to restart it only once that
        is so and those processes are gone (or OLD_WORKERS_WAIT has passed): an old worker
        takes new connections for ~100 ms after the reload and finishes what it holds,
        failover retries included, by the old config. So from the restart command on, no
        request reaches the unit. Without these calls (a Prober used alone) the agent is
        asked as soon as the verdict is reached.
        """
        calls: list[tuple[Recovery, dict[str, Any], str | None]] = []
        helds: list[HookRun] = []
        now = self.clock()
        with self._lock:
            self._served_without = keys
            for worker in old_workers:
                self._old_workers.setdefault(worker, now)
            for track in self._tracks.values():
                r = track.target.probe.recovery
                if r is None or not r.agent or track.failures < r.after:
                    continue
                if track.hooked_at is not None and now - track.hooked_at < r.cooldown:
                    continue
                hook, held = self._agent_due(track, now)
                if hook is not None:
                    calls.append((hook, _describe(track), track.target.control))
                if held:
                    helds.append(_held(track))
        for run in helds:
            self._report(run)
        for hook, payload, control in calls:
            if not self._stop.is_set():
                self._pool.submit(self._run_hook, hook, payload, control)

    def _agent_due(self, track: _Track, now: float) -> tuple[Recovery | None, bool]:
        """Under the lock, for a track past `after` and its cooldown: (the recovery to run
        now, or None; whether to report it held). Its agent is asked when it is
        pseudo-dead, nginx serves without it, and another instance passes."""
        r = track.target.probe.recovery
        served = self._served_without
        if not track.dead or (served is not None and track.target.key not in served):
            return None, False
        if self._old_workers_remain(now):
            return None, False  # asked at a later probe round, once they are gone
        service = track.target.service
        if any(
            t is not track and t.target.service == service and not t.dead and t.successes > 0
            for t in self._tracks.values()
        ):
            track.hooked_at, track.held_said = now, False
            self._hooked[track.target.key] = now
            return r, False
        if track.held_said:
            return None, False
        track.held_said = True
        return None, True

    def _old_workers_remain(self, now: float) -> bool:
        """Under the lock: do nginx processes from before the last reloads still run (and
        are they still waited for)? Those waited for past OLD_WORKERS_WAIT are let go,
        said once: a long-lived connection must not hold a restart back for hours."""
        if not self._old_workers:
            return False
        still = self.alive(frozenset(self._old_workers))
        waited = {w: since for w, since in self._old_workers.items() if w in still}
        late = sorted(pid for (pid, _), since in waited.items() if now - since >= OLD_WORKERS_WAIT)
        if late:
            log.warning(
                "nginx worker(s) %s from before the reload still run after %gs; asking "
                "agents to restart without waiting for them (they may still send requests "
                "by the old config)",
                ", ".join(map(str, late)),
                OLD_WORKERS_WAIT,
            )
        self._old_workers = {
            w: since for w, since in waited.items() if now - since < OLD_WORKERS_WAIT
        }
        return bool(self._old_workers)

    def _warn_if_service_down(self, service: str) -> None:
        tracks = [t for t in self._tracks.values() if t.target.service == service]
        if tracks and all(t.dead for t in tracks):
            log.warning(
                "service %r: every instance fails its health probe; keeping them all in "
                "(probe evidence alone never takes a whole service down)",
                service,
            )

    def _run_hook(self, recovery: Recovery, payload: dict[str, Any], control: str | None) -> None:
        try:
            run = recoveries.run(recovery, payload, control)
        except Exception as exc:  # a bug in a hook must not kill the pool's thread silently
            run = HookRun(payload["key"], "agent" if recovery.agent else "hook", False, str(exc))
        self._report(run)

    def _report(self, run: HookRun) -> None:
        (log.info if run.ok else log.warning)(
            "recovery for %s (%s): %s: %s", run.key, run.action, run.result, run.detail
        )
        with self._lock:
            self.hook_runs.append(run)
        self.on_recovery(run)


def _held(track: _Track) -> HookRun:
    return HookRun(
        track.target.key,
        "agent",
        False,
        f"not restarting it: no other instance of {track.target.service!r} passes its "
        "probes (a probe wrong for all must not restart them all)",
        "held",
    )


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
