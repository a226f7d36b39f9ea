"""The agent's state machine: register, heartbeat, follow health, drain, deregister.

One thread, one loop. Each turn handles what is due (signals, child exit, a health probe,
a registry write or heartbeat, the end of a drain) and sleeps until the next deadline;
signal handlers only record the signal and wake the loop.

    waiting ──first 2xx──▶ serving (starting/up ⇄ down) ──SIGTERM──▶ draining ──▶ stopped
    (--wait-healthy)          │    ▲                      2nd signal skips the wait
                    POST /restart  └─ registered again, new registered_at
                              ▼    │
    deregistered → unlisted + grace → program stopped → started → healthy
    (any registry failure before the stop: aborted, registered again as before)

What is written, and when:
- registration: state `up` (or `starting` until the health URL has passed `rise` times,
  when there is one), `registered_at` = the time of the first registration.
- health fails `fall` times in a row: state `down`. The heartbeat goes on, so operators
  still see the unit (alive but unhealthy) instead of it vanishing like a dead one.
- health passes `rise` times in a row: state `up`. `registered_at` is not rewritten: the
  unit did not restart; the gateway decides whether a return from down is ramped.
- lease expired / registration lost: registered again with the same `registered_at`.
- shutdown: state `draining`, then deletion.
- restart (control endpoint): deletion first; after the program is back and healthy, a
  fresh registration with `registered_at` = now, so gateways ramp it up from step one.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import requests

from ..model.validate import split_address
from ..util.backoff import Backoff
from . import program
from .base import (
    DOWN,
    DRAINING,
    SERVING,
    STARTING,
    UP,
    AgentConfig,
    ControlConfig,
    HealthCheck,
    LeaseLost,
    Record,
    Registrar,
    RegistryDown,
)
from .control import ControlServer, TokenFile
from .health import Checker, HealthTracker, inflight
from .restart import (
    ABORTED,
    CANCELLED,
    FAILED,
    OK,
    RestartDesk,
    RestartLimit,
    iso_ms,
    secs,
    wall_now,
)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Passed straight to a wrapped program: reload, reopen logs and friends.
FORWARD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
INFLIGHT_POLL = 0.25  # seconds between in-flight count reads while draining
KILL_WAIT = 5.0  # after SIGKILL to the group, how long its processes get to vanish
LIST_POLL = 0.1  # seconds between registry reads while waiting for the entry to go
# After deregistration, how long the registry may go on listing the unit as serving
# before the restart is aborted (Consul's catalog lags its local agent by a sync).
UNLIST_TIMEOUT = 30.0

# While a restarted unit starts, it is checked at least this often.
RESTART_POLL = 0.25

# The phases of a restart, in order (the steps recorded for /status are in restart.py).
DEREGISTERING, UNLISTING, STOPPING = "deregistering", "waiting_unlisted", "stopping"
STARTING_PROGRAM, WAITING_HEALTHY, REGISTERING = "starting", "waiting_healthy", "registering"
# While the old program is being replaced, its exit is part of the restart.
OLD_PROGRAM_PHASES = (DEREGISTERING, UNLISTING, STOPPING, STARTING_PROGRAM)

Log = Callable[[str], None]


class ChildError(Exception):
    """The wrapped program could not be started."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class _Job:
    """The loop's working state for the restart it is doing (the desk holds its record)."""

    id: str
    previous: Record | None  # what the registry held; restored when the restart aborts
    phase: str = DEREGISTERING
    deadline: float = 0.0
    unlisted_at: float | None = None
    next_check: float = 0.0
    last_detail: str = ""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        registrar: Registrar,
        log: Log,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        wall: Callable[[], datetime] = wall_now,
    ) -> None:
        self.config = config
        self.registrar = registrar
        self.log = log
        self.clock = clock
        self.now = now
        self.wall = wall
        self.http = requests.Session()
        self.http.trust_env = False  # the unit is local: never through a proxy
        self.backoff = Backoff(0.5, max(1.0, min(30.0, config.heartbeat_every)))
        self.child: subprocess.Popen[bytes] | None = None
        self.child_started: datetime | None = None
        self._signals: list[int] = []
        self._wake = threading.Event()
        self._previous: dict[int, Any] = {}

        self.record: Record | None = None  # what the registry should hold
        self.written: str | None = None  # state the registry holds; None: not registered
        self.ever_registered = False
        self.outage = False
        self.lost_in_row = 0
        self.next_retry = 0.0
        self.next_beat = float("inf")

        self.checker = Checker(config.health, clock) if config.health else None
        self.tracker = HealthTracker(config.rise, config.fall)
        self.waiting = bool(config.wait_healthy and config.health)  # for the first 2xx
        self._waiting_for = ""  # the last reason a check failed while waiting
        self.stopping = False
        # Without --control-listen nobody asks the desk; /status-like state lives there still.
        control = config.control or ControlConfig("", 0, "", "")
        limit = RestartLimit(control.limit, control.window, clock)
        self.desk = RestartDesk(limit, log, clock=clock, wall=wall, wake=self._wake.set)
        self.server: ControlServer | None = None
        self.job: _Job | None = None

    # --- signals --------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:
            self._signals.append(signum)
        self._wake.set()

    def _install_signals(self) -> None:
        wanted = list(STOP_SIGNALS) + [signal.SIGCHLD]
        if self.config.command:
            wanted += list(FORWARD_SIGNALS)
        for sig in wanted:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _sleep_until(self, deadline: float) -> None:
        self._wake.wait(max(0.0, min(deadline - self.clock(), 60.0)))
        self._wake.clear()

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            health = self.config.health
            if health is not None and health.insecure:
                self.log(
                    f"warning: --health-insecure: {health.url} is checked without TLS verification"
                )
            if self.config.control:
                self._open_control()
            if self.config.command:
                self._start_child()
            return self._serve()
        finally:
            if self.server is not None:
                self.server.close()
            self._restore_signals()
            self.registrar.close()
            self.http.close()

    def _open_control(self) -> None:
        """Listen before anything else starts: a bad token file or a taken port is a
        usage error (exit 2), with no program started and nothing registered."""
        control = self.config.control
        assert control is not None
        tokens = TokenFile(control.token_file, self.log)
        self.server = ControlServer(control.host, control.port, tokens, self.desk, self.log)
        self.log(
            f"control endpoint listening on {control.host}:{control.port}, advertised as "
            f"{control.url} (restart grace {secs(control.grace)}, at most {control.limit} "
            f"restart(s) per {secs(control.window)})"
        )
        if _loopback(urlsplit(control.url).hostname or ""):
            self.log(
                f"note: {control.url} is reachable from this host only; a gateway elsewhere "
                "needs --control-listen on an address it reaches (or --control-advertise)"
            )

    def _serve(self) -> int:
        cfg = self.config
        if self.waiting:
            assert cfg.health is not None
            passing = "accept a connection" if cfg.health.kind == "tcp" else "answer 2xx"
            self.log(f"waiting for {cfg.health.label} to {passing} before registering")
        else:
            self.record = Record.first(cfg, STARTING if cfg.health else UP, self.now())
        next_health = self.clock()
        drain_started: float | None = None
        skip_drain = False
        next_inflight = 0.0

        while True:
            code = self._child_exit()
            if code is not None and not (self.job and self.job.phase in OLD_PROGRAM_PHASES):
                self.log(f"{self._child_name()} exited by itself with code {code}")
                self.stopping = True
                self.desk.stopping()
                self._end_restart(FAILED, f"the program exited with code {code}")
                self._deregister()
                if self.child is not None and self._group_running(self.child.pid):
                    self._stop_child()  # what it started and left behind
                return code

            for signum in self._take_signals():
                name = signal.Signals(signum).name
                if signum not in STOP_SIGNALS:
                    self._forward(signum)
                elif drain_started is None:
                    drain_started = self.clock()
                    self.stopping = True
                    self.desk.stopping()
                    self._end_restart(CANCELLED, f"{name}: the agent is stopping")
                    if self.record is None or not self.ever_registered:
                        self.log(f"{name}: stopping (not registered, nothing to drain)")
                        skip_drain = True
                    else:
                        self.record = self.record.with_state(DRAINING)
                        extra = f" or until {cfg.inflight_url} reports 0" * bool(cfg.inflight_url)
                        self.log(
                            f"{name}: marking draining, waiting up to {secs(cfg.drain)}{extra} "
                            "(send it again to skip the wait)"
                        )
                elif not skip_drain:
                    skip_drain = True
                    self.log(f"second {name}: skipping the rest of the drain")

            restart_due = float("inf")
            if drain_started is None:
                if self.job is None:
                    accepted = self.desk.take()
                    if accepted is not None:
                        self.job = _Job(accepted.id, self.record)
                if self.job is not None:
                    restart_due = self._restart_turn()

            now = self.clock()
            if self.checker and drain_started is None and self.job is None and now >= next_health:
                next_health = now + cfg.health_interval
                self._health_turn(self.checker)

            self._sync()
            if self.job is not None and self.job.phase == REGISTERING and self._registered():
                self._restart_registered()
            self._publish()

            now = self.clock()
            if drain_started is not None:
                drain_end = drain_started + cfg.drain
                if skip_drain:
                    break
                if now >= drain_end:
                    self.log(f"drain time {secs(cfg.drain)} is over")
                    break
                if cfg.inflight_url and now >= max(next_inflight, drain_started + cfg.drain_min):
                    next_inflight = now + INFLIGHT_POLL
                    count = inflight(self.http, cfg.inflight_url, self._probe_timeout())
                    if count == 0:
                        self.log(f"no requests in flight after {now - drain_started:.1f}s")
                        break
                wake = min(drain_end, max(next_inflight, drain_started + cfg.drain_min))
                if not cfg.inflight_url:
                    wake = drain_end
            elif self.job is not None:
                wake = restart_due
            else:
                wake = next_health if self.checker else float("inf")
            self._sleep_until(min(wake, self._registry_due()))

        self._deregister()
        return self._stop_child()

    def _health_turn(self, checker: Checker) -> None:
        """One probe of the unit; a verdict that flips changes the record's state."""
        cfg, label = self.config, checker.check.label
        result = checker(self._probe_timeout())
        if self.waiting:
            if result.ok:
                self.waiting = False
                self.tracker.healthy = True
                self.record = Record.first(cfg, UP, self.now())
                self.log(f"{label} answered {result.detail}: registering")
            elif result.detail != self._waiting_for:
                self.log(f"{label}: {result.detail}; not registering yet")
            self._waiting_for = result.detail
        elif self.tracker.observe(result.ok):
            assert self.record is not None
            if result.ok:
                self.record = self.record.with_state(UP)
                self.log(f"{label} passed {cfg.rise} time(s) in a row: marking up")
            else:
                self.record = self.record.with_state(DOWN)
                self.log(
                    f"{label} failed {cfg.fall} time(s) in a row ({result.detail}): marking down"
                )

    def _publish(self) -> None:
        """What GET /status says about the unit."""
        record = self.record
        if self.stopping:
            state = "stopping"
        elif self.job is not None:
            state = "restarting"
        else:
            state = record.state if record is not None else "waiting"
        self.desk.publish(
            service=self.config.service,
            id=self.config.instance_id,
            address=self.config.address,
            state=state,
            registered=self._registered(),
            registry=self.registrar.name,
            registry_reachable=not self.outage,
            registered_at=record.registered_at_iso if record is not None else None,
            pid=self.child.pid if self.child is not None else None,
            started_at=iso_ms(self.child_started) if self.child_started else None,
            agent_pid=os.getpid(),
        )

    # --- restart --------------------------------------------------------------------------

    def _restart_turn(self) -> float:
        """Take the running restart as far as it can go now; returns when to look again.

        The order is the seed's: stop vouching (deregister), wait until the registry no
        longer lists the unit as serving and the grace has passed, stop the program,
        start it, wait until it is healthy, register it with a new start time. Until the
        program is stopped, any registry failure aborts: a unit the registry may still
        list keeps running, and is registered again as it was."""
        job, cfg = self.job, self.config
        assert job is not None and cfg.control is not None
        where = self.registrar.name
        if job.phase == DEREGISTERING:
            self.record = None  # no heartbeat, no re-registration from here on
            self._publish()
            try:
                self.registrar.deregister()
            except RegistryDown as exc:
                return self._abort(f"could not deregister from {where} ({exc})")
            self.written = None
            self.desk.step("deregistered")
            self.log(
                f"restart {job.id}: deregistered from {where}; waiting until it no longer "
                f"lists the unit, then {secs(cfg.control.grace)} of grace"
            )
            job.phase, job.deadline, job.next_check = UNLISTING, self.clock() + UNLIST_TIMEOUT, 0.0
            self.desk.phase(UNLISTING)

        if job.phase == UNLISTING:
            now = self.clock()
            if job.unlisted_at is None:
                if now < job.next_check:
                    return job.next_check
                try:
                    listed = self.registrar.listed()
                except RegistryDown as exc:
                    return self._abort(
                        f"cannot read {where} to see that it no longer lists the unit ({exc})"
                    )
                if listed in SERVING:
                    if now >= job.deadline:
                        return self._abort(
                            f"{where} still lists the unit as {listed} "
                            f"{secs(UNLIST_TIMEOUT)} after it was deregistered"
                        )
                    job.next_check = now + LIST_POLL
                    return job.next_check
                job.unlisted_at = now = self.clock()
                self.desk.step("unlisted", now)
            grace_end = job.unlisted_at + cfg.control.grace
            if now < grace_end:
                return grace_end
            self.desk.step("grace_over", max(now, grace_end))
            job.phase = STOPPING
            self.desk.phase(STOPPING)
            self._publish()

        if job.phase == STOPPING:
            self.log(f"restart {job.id}: {where} no longer lists the unit; stopping the program")
            code = self._stop_child()
            self.desk.step("stopped")
            if any(s in STOP_SIGNALS for s in self._signals):
                return self.clock()  # the agent is stopping: the loop cancels the restart
            self.log(f"restart {job.id}: the program stopped with code {code}; starting it again")
            job.phase = STARTING_PROGRAM
            self.desk.phase(STARTING_PROGRAM)

        if job.phase == STARTING_PROGRAM:
            try:
                self._start_child()
            except ChildError as exc:
                self._end_restart(FAILED, str(exc))
                raise
            self.desk.step("started")
            job.phase, job.next_check = WAITING_HEALTHY, self.clock()
            job.deadline = job.next_check + cfg.control.start_timeout
            self.desk.phase(WAITING_HEALTHY)

        if job.phase == WAITING_HEALTHY:
            now = self.clock()
            if now < job.next_check:
                return job.next_check
            checker = self.checker or self._connect_checker()
            result = checker(self._probe_timeout())
            if not result.ok:
                if result.detail != job.last_detail:
                    self.log(
                        f"restart {job.id}: waiting for {checker.check.label} ({result.detail})"
                    )
                    job.last_detail = result.detail
                if self.clock() >= job.deadline:
                    return self._never_healthy(checker, result.detail)
                job.next_check = min(
                    self.clock() + min(cfg.health_interval, RESTART_POLL), job.deadline
                )
                return job.next_check
            after = self.desk.step("healthy")
            self.log(
                f"restart {job.id}: {checker.check.label} answered {result.detail} ({after:.1f}s)"
            )
            self.waiting = False
            self.tracker = HealthTracker(cfg.rise, cfg.fall, healthy=True)
            # A new start time: the gateway ramps the unit up from its first warm-up step.
            self.record = Record.first(cfg, UP, self.now())
            self.next_retry = 0.0
            job.phase = REGISTERING
            self.desk.phase(REGISTERING)
        # Registering: the loop's _sync writes the record in this turn, and retries with
        # backoff while the registry is away.
        return float("inf")

    def _never_healthy(self, checker: Checker, detail: str) -> float:
        """The restarted program did not pass within --start-timeout: the restart failed,
        and the desk is free for another. The program keeps running, unregistered, and is
        registered (with a new start time) once it passes, as with --wait-healthy."""
        cfg = self.config
        assert cfg.control is not None
        why = (
            f"{checker.check.label} did not pass within {secs(cfg.control.start_timeout)} "
            f"of the start ({detail}); the program keeps running, not registered, and is "
            "registered once it passes (POST /restart to try again)"
        )
        self._end_restart(FAILED, why)
        self.checker, self.waiting, self._waiting_for = checker, True, detail
        return self.clock()

    def _connect_checker(self) -> Checker:
        """Without a health check, a restarted unit is healthy once its port accepts."""
        host, port = split_address(self.config.address)
        return Checker(HealthCheck("tcp", host=host, port=port), self.clock)

    def _registered(self) -> bool:
        return self.record is not None and self.written == self.record.state

    def _restart_registered(self) -> None:
        job, record = self.job, self.record
        assert job is not None and record is not None
        after = self.desk.step("registered")
        self._end_restart(OK)
        self.log(
            f"restart {job.id} done in {after:.1f}s: registered again with registered_at "
            f"{record.registered_at_iso}, so the gateway ramps it up from the first step"
        )

    def _abort(self, why: str) -> float:
        """Before the program was touched: keep it, and register it again as it was."""
        job = self.job
        assert job is not None
        self.record, self.written = job.previous, None
        self.next_retry = 0.0
        self.log(
            f"restart {job.id} aborted: {why}; the agent does not restart a unit the gateway "
            "may still send requests to: it keeps running and is registered again as before"
        )
        self._end_restart(ABORTED, why)
        return self.clock()

    def _end_restart(self, result: str, why: str = "") -> None:
        if self.job is None:
            return
        if result not in (OK, ABORTED):
            self.log(f"restart {self.job.id} {result}: {why}")
        self.desk.finish(result, why)
        self.job = None

    # --- registry -------------------------------------------------------------------------

    def _pending(self) -> bool:
        """A registration or state change still has to reach the registry."""
        record = self.record
        if record is None or (record.state == DRAINING and self.written is None):
            return False  # never add a unit to the registry on its way out
        return self.written != record.state

    def _registry_due(self) -> float:
        """When the registry needs us next: a retry, a heartbeat, or never."""
        record = self.record
        if record is None or (record.state == DRAINING and self.written is None):
            return float("inf")
        return self.next_retry if self._pending() else self.next_beat

    def _sync(self) -> None:
        """Bring the registry in line with self.record, or heartbeat when due."""
        record, now = self.record, self.clock()
        if record is None:
            return
        if record.state == DRAINING and self.written is None:
            return  # see _pending
        if self._pending() and now < self.next_retry:
            return
        if not self._pending() and now < self.next_beat:
            return
        try:
            if self.written is None:
                self.registrar.register(record)
                self.ever_registered = True
                self.log(
                    f"registered in {self.registrar.name} as {record.state} "
                    f"(registered_at {record.registered_at_iso}, ttl {secs(self.config.ttl)})"
                )
            elif self.written != record.state:
                # Logged where the state was decided; a failed write logs the outage.
                self.registrar.update(record)
            else:
                self.registrar.heartbeat(record)
        except LeaseLost as exc:
            if self.written is not None:
                self.log(f"registration lost ({exc}): registering again")
            elif not self.lost_in_row:
                self.log(f"registration refused ({exc}); retrying with backoff")
            self.written = None
            # Register again at once; if that is refused too, back off like an outage.
            self.next_retry = now + (self.backoff.next() if self.lost_in_row else 0.0)
            self.lost_in_row += 1
            return
        except RegistryDown as exc:
            if not self.outage:
                self.log(f"registry unreachable ({exc}); retrying with backoff, never giving up")
            self.outage = True
            self.next_retry = now + self.backoff.next()
            if not self._pending():
                self.next_beat = self.next_retry
            return
        if self.outage:
            self.log(f"{self.registrar.name} reachable again")
        self.outage = False
        self.lost_in_row = 0
        self.backoff.reset()
        self.written = record.state
        self.next_beat = self.clock() + self.config.heartbeat_every

    def _deregister(self) -> None:
        """Delete the registration, retrying for a while; the TTL is the safety net."""
        if not self.ever_registered:
            return
        deadline = self.clock() + max(5.0, self.config.ttl)
        backoff = Backoff(0.2, 2.0)
        while True:
            try:
                self.registrar.deregister()
            except (RegistryDown, LeaseLost) as exc:
                if self.clock() >= deadline or self._take_signals():
                    self.log(
                        f"could not deregister ({exc}); the registry drops the entry "
                        f"when its TTL runs out"
                    )
                    return
                self._sleep_until(self.clock() + backoff.next())
                continue
            self.written = None
            self.log(f"deregistered from {self.registrar.name}")
            return

    # --- the wrapped program --------------------------------------------------------------

    def _start_child(self) -> None:
        try:
            self.child = program.start(self.config.command)
        except OSError as exc:
            raise ChildError(f"cannot run {self.config.command[0]!r}: {exc.strerror}") from None
        self.child_started = self.wall()
        self.log(f"started {self._child_name()}")

    def _child_name(self) -> str:
        pid = self.child.pid if self.child else "?"
        return f"{self.config.command[0]} (pid {pid})"

    def _child_exit(self) -> int | None:
        if self.child is None:
            return None
        rc = self.child.poll()
        return None if rc is None else _exit_code(rc)

    def _forward(self, signum: int) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _stop_child(self) -> int:
        """Stop the program's whole process group: SIGTERM, then SIGKILL after the stop
        timeout; return the program's exit code once nothing of the group runs."""
        if self.child is None:
            return 0
        pgid = self.child.pid
        code = self._child_exit()
        if code is not None and not self._group_running(pgid):
            self.log(f"{self._child_name()} had already exited with code {code}")
            return code
        what = "what it started" if code is not None else self._child_name()
        self.log(f"stopping {what} with SIGTERM to process group {pgid}")
        program.signal_group(pgid, signal.SIGTERM)
        deadline = self.clock() + self.config.stop_timeout
        killed = False
        stops: list[int] = []  # handed back to the loop: a restart must not go on
        while True:
            code = self._child_exit()
            if code is not None and not self._group_running(pgid):
                break
            for signum in self._take_signals():
                if signum in STOP_SIGNALS:
                    program.signal_group(pgid, signal.SIGKILL)  # asked twice: no more waiting
                    stops.append(signum)
                else:
                    self._forward(signum)
            if self.clock() >= deadline:
                if killed:
                    self.log(f"process group {pgid} still runs after SIGKILL; leaving it")
                    break
                self.log(
                    f"process group {pgid} still running after "
                    f"{secs(self.config.stop_timeout)}: SIGKILL"
                )
                program.signal_group(pgid, signal.SIGKILL)
                killed, deadline = True, self.clock() + KILL_WAIT
            self._sleep_until(min(deadline, self.clock() + 0.05))
        self._signals[:0] = stops
        if code is None:
            return 128 + signal.SIGKILL
        self.log(f"{self._child_name()} exited with code {code}")
        return code

    def _group_running(self, pgid: int) -> bool:
        """Anything of the program's group still running, once the program was reaped."""
        program.reap_group(pgid)
        return program.group_alive(pgid)

    def _take_signals(self) -> list[int]:
        taken, self._signals = self._signals, []
        return taken

    def _probe_timeout(self) -> float:
        """Short enough that a hanging probe never delays a heartbeat past the TTL."""
        return max(0.2, min(2.0, self.config.health_interval, self.config.heartbeat_every / 2))


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exit_code(returncode: int) -> int:
    """A program killed by a signal exits like a shell reports it: 128 + signal number."""
    return 128 - returncode if returncode < 0 else returncode
