"""The agent's state machine: register, heartbeat, follow health, drain, deregister.

One thread, one loop. Each turn handles what is due (signals, child exit, a health probe,
a registry write or heartbeat, the end of a drain) and sleeps until the next deadline;
signal handlers only record the signal and wake the loop.

    waiting ──first 2xx──▶ serving (starting/up ⇄ down) ──SIGTERM──▶ draining ──▶ stopped
    (--wait-healthy)                                      2nd signal skips the wait

What is written, and when:
- registration: state `up` (or `starting` until the health URL has passed `rise` times,
  when there is one), `registered_at` = the time of the first registration.
- health fails `fall` times in a row: state `down`. The heartbeat goes on, so operators
  still see the unit (alive but unhealthy) instead of it vanishing like a dead one.
- health passes `rise` times in a row: state `up`. `registered_at` is not rewritten: the
  unit did not restart; the gateway decides whether a return from down is ramped.
- lease expired / registration lost: registered again with the same `registered_at`.
- shutdown: state `draining`, then deletion.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import requests

from ..util.backoff import Backoff
from . import program
from .base import (
    DOWN,
    DRAINING,
    STARTING,
    UP,
    AgentConfig,
    LeaseLost,
    Record,
    Registrar,
    RegistryDown,
)
from .health import HealthTracker, inflight, probe

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Passed straight to a wrapped program: reload, reopen logs and friends.
FORWARD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
INFLIGHT_POLL = 0.25  # seconds between in-flight count reads while draining
KILL_WAIT = 5.0  # after SIGKILL to the group, how long its processes get to vanish

Log = Callable[[str], None]


class ChildError(Exception):
    """The wrapped program could not be started."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        registrar: Registrar,
        log: Log,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.registrar = registrar
        self.log = log
        self.clock = clock
        self.now = now
        self.http = requests.Session()
        self.http.trust_env = False  # the unit is local: never through a proxy
        self.backoff = Backoff(0.5, max(1.0, min(30.0, config.heartbeat_every)))
        self.child: subprocess.Popen[bytes] | None = None
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
            if self.config.command:
                self._start_child()
            return self._serve()
        finally:
            self._restore_signals()
            self.registrar.close()
            self.http.close()

    def _serve(self) -> int:
        cfg = self.config
        tracker = HealthTracker(cfg.rise, cfg.fall)
        waiting = bool(cfg.wait_healthy and cfg.health_url)
        if waiting:
            self.log(f"waiting for {cfg.health_url} to answer 2xx before registering")
        else:
            self.record = Record.first(cfg, STARTING if cfg.health_url else UP, self.now())
        next_health = self.clock()
        drain_started: float | None = None
        skip_drain = False
        next_inflight = 0.0

        while True:
            code = self._child_exit()
            if code is not None:
                self.log(f"{self._child_name()} exited by itself with code {code}")
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
                    if self.record is None or not self.ever_registered:
                        self.log(f"{name}: stopping (never registered, nothing to drain)")
                        skip_drain = True
                    else:
                        self.record = self.record.with_state(DRAINING)
                        extra = f" or until {cfg.inflight_url} reports 0" * bool(cfg.inflight_url)
                        self.log(
                            f"{name}: marking draining, waiting up to {_secs(cfg.drain)}{extra} "
                            "(send it again to skip the wait)"
                        )
                elif not skip_drain:
                    skip_drain = True
                    self.log(f"second {name}: skipping the rest of the drain")

            now = self.clock()
            if cfg.health_url and drain_started is None and now >= next_health:
                next_health = now + cfg.health_interval
                result = probe(self.http, cfg.health_url, self._probe_timeout())
                if waiting:
                    if result.ok:
                        waiting = False
                        tracker.healthy = True
                        self.record = Record.first(cfg, UP, self.now())
                        self.log(f"{cfg.health_url} answered {result.detail}: registering")
                elif tracker.observe(result.ok):
                    assert self.record is not None
                    if result.ok:
                        self.record = self.record.with_state(UP)
                        self.log(f"{cfg.health_url} passed {cfg.rise} time(s) in a row: marking up")
                    else:
                        self.record = self.record.with_state(DOWN)
                        self.log(
                            f"{cfg.health_url} failed {cfg.fall} time(s) in a row "
                            f"({result.detail}): marking down"
                        )

            self._sync()

            now = self.clock()
            if drain_started is not None:
                drain_end = drain_started + cfg.drain
                if skip_drain:
                    break
                if now >= drain_end:
                    self.log(f"drain time {_secs(cfg.drain)} is over")
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
            else:
                wake = next_health if cfg.health_url else float("inf")
            self._sleep_until(min(wake, self._registry_due()))

        self._deregister()
        return self._stop_child()

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
                    f"(registered_at {record.registered_at_iso}, ttl {_secs(self.config.ttl)})"
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
        while True:
            code = self._child_exit()
            if code is not None and not self._group_running(pgid):
                break
            for signum in self._take_signals():
                if signum in STOP_SIGNALS:
                    program.signal_group(pgid, signal.SIGKILL)  # asked twice: no more waiting
                else:
                    self._forward(signum)
            if self.clock() >= deadline:
                if killed:
                    self.log(f"process group {pgid} still runs after SIGKILL; leaving it")
                    break
                self.log(
                    f"process group {pgid} still running after "
                    f"{_secs(self.config.stop_timeout)}: SIGKILL"
                )
                program.signal_group(pgid, signal.SIGKILL)
                killed, deadline = True, self.clock() + KILL_WAIT
            self._sleep_until(min(deadline, self.clock() + 0.05))
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


def _exit_code(returncode: int) -> int:
    """A program killed by a signal exits like a shell reports it: 128 + signal number."""
    return 128 - returncode if returncode < 0 else returncode


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"
