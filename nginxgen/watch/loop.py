"""`nginxgen watch`: keep a running nginx/OpenResty in step with the registry, unattended.

The loop, one step at a time:

    wait for a change ─▶ debounce ─▶ read ─▶ apply (apply.py: guard ─▶ observe ─▶ build ─▶
        ▲                                       install ─▶ reload ─▶ confirm ─▶ record)
        └──────────────────────────────────────────────┘

A change is a registry event, a warm-up step falling due (the plan's next_change_at), the
prober finding an instance pseudo-dead or healthy again, a held removal or a flapping
instance due for another look, a resync, or a SIGHUP. This module decides only *when*:
waits, debounce, backoff and signals, all on an injected Clock, so tests drive them.

Registry errors never end the loop: the last good catalog stays in force, reads are
retried with capped exponential backoff and jitter, and /healthz says the data is stale.
"""

from __future__ import annotations

import errno
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from ..deploy.confirm import serving_generation
from ..model.catalog import Catalog
from ..pipeline import (
    BuildCache,
    NginxMissing,
    ensure_runtime_dirs,
    nginx_for_test,
    untested_warning,
)
from ..registry.errors import UnusableVersion
from ..sources import RegistryError, Source, open_source
from ..spec import Spec, SpecError, load_spec
from ..status.traffic import PeerTraffic
from ..util.atomic_write import remove_stale_temps
from ..util.backoff import Backoff
from ..util.clock import Clock
from .apply import HEALTH_PROBE_TIMEOUT, Applier, Outcome, Result, Settled
from .instances import InstanceView, ReloadMode
from .sampler import TrafficSampler
from .telemetry import Health, Metrics, StatusServer, event

# Longest single block on the registry: SIGHUP, schedules and holds are noticed this fast.
WAIT_SLICE = 1.0
# Wake this much after a warm-up step boundary, so the plan surely sees the new step.
SCHEDULE_MARGIN = 0.01
# Longest single sleep: a signal is noticed at least this often.
NAP = 0.5


class ListenError(Exception):
    """watch.listen cannot be bound; one sentence for the user (exit 2)."""


class _Interrupted(Exception):
    """Raised by the signal handler, only while the loop is idly waiting."""


@dataclass
class Options:
    once: bool = False
    dry_run: bool = False
    listen: bool = True  # serve /healthz and /metrics (off for --once)


class Watcher:
    def __init__(
        self,
        config_path: Path,
        spec: Spec,
        options: Options | None = None,
        source: Source | None = None,  # tests pass a fake; default: spec.registry
        clock: Clock | None = None,  # tests pass one they drive; default: the system's
    ) -> None:
        self.config_path = config_path
        self.spec = spec
        self.options = options or Options()
        self.clock = clock or Clock()
        self.metrics = Metrics()
        self.health = Health(clock=self.clock)
        cache = BuildCache()
        binary = nginx_for_test(spec, None, cache.versions)  # NginxMissing: exit 2
        # Bound before anything is touched: a second watcher stops here, harmlessly.
        self._server: StatusServer | None = self._bind()
        self.source: Source = source or open_source(spec.registry, spec.service_names)
        self.backoff = Backoff(spec.watch.backoff.initial, spec.watch.backoff.max)
        self.applier = Applier(
            spec,
            binary,
            metrics=self.metrics,
            health=self.health,
            clock=self.clock,
            cache=cache,
            dry_run=self.options.dry_run,
        )
        self.traffic = PeerTraffic()
        applier = self.applier
        self.instances = InstanceView(
            lambda: applier.spec,
            lambda: applier.last_plan,
            ReloadMode(lambda: applier.spec, lambda: applier.applied_plan, self.traffic),
            traffic=self.traffic,
            probe_errors=lambda: applier.policies.probe_errors(),
            kept=lambda: applier.kept,
            generation=lambda: self.health.generation,
            served=self._served_generation,
            metrics=self.metrics,
        )
        applier.after_apply = self.instances.refresh
        self.sampler = TrafficSampler(
            self._metrics_listen, self.traffic, clock=self.clock, on_sample=self.instances.refresh
        )
        if self._server is not None:
            self._server.document = self.instances.document
        self.last_read = 0.0
        self.read_took = 0.0  # seconds the last successful read took
        self.stopping = False
        self.reload_spec = False
        self._interruptible = False
        self._dropped_said: set[str] = set()
        if binary is None:
            event(logging.WARNING, untested_warning(spec))
        if not self.options.dry_run:
            # The directories the spec names (output, temp_dir, pid): nginx needs them.
            ensure_runtime_dirs(spec)
            for tmp in remove_stale_temps(spec.nginx.output):
                event(logging.INFO, f"removed {tmp}, left behind by an interrupted install")

    def _bind(self) -> StatusServer | None:
        """The /healthz and /metrics listener, bound now and served once `run` starts.
        A dry run or a single pass binds nothing."""
        listen = self.spec.watch.listen
        opts = self.options
        if not opts.listen or listen == "off" or opts.once or opts.dry_run:
            return None
        try:
            return StatusServer(listen, self.health, self.metrics)
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            hint = " (is another nginxgen watch running?)" if exc.errno == errno.EADDRINUSE else ""
            raise ListenError(f"watch.listen {listen}: cannot listen: {why}{hint}") from None

    def _metrics_listen(self) -> str | None:
        """Where nginx's /metrics is, for the sampler; None when the spec has them off."""
        nginx = self.applier.spec.nginx
        return nginx.status_listen if nginx.metrics and nginx.status_listen != "off" else None

    def _served_generation(self) -> str | None:
        listen = self.applier.spec.nginx.status_listen
        if listen == "off":
            return None
        return serving_generation(listen, timeout=HEALTH_PROBE_TIMEOUT)

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Loop until SIGTERM/SIGINT (exit 0). With --once: 0 applied, 1 failed."""
        self._install_signals()
        if self._server is not None:
            self._server.start()
            event(
                logging.INFO, "health, metrics and status listening", listen=self.spec.watch.listen
            )
        try:
            if self.options.once or self.options.dry_run:
                return self.one_pass()  # the ramp as it stands now; no probes, no waiting
            self.applier.policies.start()
            if self._server is not None:
                self.sampler.start()  # for /status and the gauges
            self.loop()
            return 0
        finally:
            self.sampler.stop()
            self.applier.policies.close()
            if self._server:
                self._server.stop()
            self.source.close()
            event(logging.INFO, "stopped")

    def one_pass(self) -> int:
        try:
            catalog = self.read()
        except RegistryError:
            return 1
        outcome = self.applier.apply_safely(catalog, self.clock.monotonic())
        return 0 if outcome.result in (Result.APPLIED, Result.UNCHANGED) else 1

    def apply(self, catalog: Catalog) -> Outcome:
        """Apply `catalog` now (see Applier.apply), as the loop does after a change."""
        return self.applier.apply_safely(catalog, self.clock.monotonic())

    def loop(self) -> None:
        changed_at = self.clock.monotonic()
        woke = "start"  # what ended the last wait (see wait_for_change)
        while not self.stopping:
            if self.reload_spec:
                self._reread_spec()
            try:
                if woke == "probe":
                    # Instances failing together flip within moments: one reload for all.
                    self.sleep(self.applier.quiet_period().min)
                catalog = self.read()
                if woke == "registry":
                    catalog = self.settle(catalog, changed_at)
                quiet = self.clock.monotonic() - changed_at - self.read_took
            except RegistryError as exc:
                accepted = self.applier.accepted
                retry = ("probe", "warmup", "certificate", "templates", "guard")
                if woke in retry and accepted is not None:
                    # Probe verdicts, ramp steps, renewed certificates and edited templates
                    # do not wait for the registry to return.
                    self.applier.apply_safely(accepted, changed_at)
                    woke = "error"
                if self.back_off(exc):
                    woke, changed_at = "registry", self.clock.monotonic()
                continue
            self.backoff.reset()
            if self.stopping:
                break
            self.applier.apply_safely(catalog, changed_at, Settled(max(0.0, quiet), self.read_took))
            woke = self.wait_for_change(catalog.version)
            changed_at = self.clock.monotonic()

    # --- the steps ---------------------------------------------------------------------

    def read(self) -> Catalog:
        """One registry read; failures are counted, logged and marked stale, then re-raised."""
        started = self.clock.monotonic()
        try:
            catalog = self.source.read()
        except RegistryError as exc:
            self._registry_failed(str(exc))
            raise
        except Exception as exc:  # an adapter bug must not end the loop either
            self._registry_failed(f"{type(exc).__name__}: {exc}")
            raise RegistryError(str(exc)) from exc
        self.metrics.reads.inc()
        self.last_read = self.clock.monotonic()
        self.read_took = self.last_read - started
        # Every read counts for flap damping, also the ones a debounce window swallows.
        self.applier.flaps.observe(catalog, self.last_read)
        if self.health.stale_since is not None:
            event(logging.INFO, "registry readable again", source=catalog.source)
        self.health.stale_since = None
        self.metrics.stale.set(0)
        # Say each refused entry once, not on every read while it stays in the registry.
        dropped = {str(d) for d in catalog.dropped}
        for line in sorted(dropped - self._dropped_said):
            event(logging.WARNING, f"dropped {line}")
        self._dropped_said = dropped
        return catalog

    def _registry_failed(self, message: str) -> None:
        self.metrics.read_errors.inc()
        self.metrics.stale.set(1)
        if self.health.stale_since is None:
            self.health.stale_since = self.clock.wall().timestamp()
        self.health.stale_reason = message
        event(
            logging.ERROR,
            "registry unavailable; keeping the last good catalog",
            error=message,
            retry_after=f"{self.backoff.initial:g}s..{self.backoff.cap:g}s",
        )

    def back_off(self, exc: RegistryError) -> bool:
        """Wait before reading again; True when the registry moved meanwhile. A registry
        that answers with unusable content (a broken file) is watched meanwhile: its next
        edit ends the backoff at once. One that is down is not asked until it is over."""
        delay = self.backoff.next()
        if not isinstance(exc, UnusableVersion):
            self.sleep(delay)
            return False
        deadline = self.clock.monotonic() + delay
        while not (self.stopping or self.reload_spec):
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return False
            try:
                # In slices, like wait_for_change: a signal is noticed between them.
                if self._idle(self._wait, exc.version, min(WAIT_SLICE, left)):
                    return True
            except RegistryError:
                self.sleep(left)
                return False
        return False

    def settle(self, catalog: Catalog, first_change: float) -> Catalog:
        """Debounce: wait until the registry is quiet for `min`, at most `max` in all.

        Every event inside the window is read (so the last state wins) but nothing is
        rendered until the window closes: 100 events give one reload. The quiet counts
        from when each event was noticed, so the time its read takes is not added.
        """
        window = self.applier.quiet_period()  # a push waits less than a reload
        latest = first_change + window.max
        last_event = first_change
        while not self.stopping:
            quiet_until = min(last_event + window.min, latest)
            remaining = quiet_until - self.clock.monotonic()
            if remaining <= 0:
                break
            try:
                moved = self._idle(self._wait, catalog.version, remaining)
            except RegistryError as exc:
                self._registry_failed(str(exc))
                raise
            if not moved:
                break
            last_event = self.clock.monotonic()
            catalog = self.read()
        return catalog

    def wait_for_change(self, version: str) -> str:
        """Block until the registry moves ("registry"), a warm-up step falls due
        ("warmup"), the prober's verdict changes ("probe"), a certificate file changes
        ("certificate"), a partial in templates_dir changes ("templates"), a held removal
        needs another look ("hold"), a flapping instance is due for release ("flap"), a
        resync is due ("resync"), waiting failed ("error"), or a signal asks for attention
        ("spec", "stop"). Returns which."""
        applier = self.applier
        due = self._schedule_due()
        slice_ = self._wait_slice()
        while True:
            if self.stopping:
                return "stop"
            if self.reload_spec:
                return "spec"
            if applier.certs.changed():
                applier.failed_text = None  # a new file is a change, even for the same text
                return "certificate"
            if applier.templates_edited():
                return "templates"
            if applier.policies.changed.is_set():
                return "probe"
            now = self.clock.monotonic()
            deadline, why = self.last_read + self.spec.watch.resync, "resync"
            hold = applier.hold
            if hold.holding and self.last_read + hold.recheck_every < deadline:
                deadline, why = self.last_read + hold.recheck_every, "hold"
            release = applier.flaps.next_release()
            if release is not None and release < deadline:
                deadline, why = release, "flap"
            if due is not None and due < deadline:
                deadline, why = due, "warmup"
            guard = applier.splits.guard_due(self.spec)
            if guard is not None and guard < deadline:
                deadline, why = guard, "guard"
            if now >= deadline:
                if why != "guard":
                    return why
                if applier.splits.check_guards(self.spec, applier.applied_plan, applier.accepted):
                    return why  # a canary goes back to 0: plan again
                continue
            timeout = min(slice_, deadline - now)
            try:
                if self._idle(self._wait, version, timeout):
                    return "registry"
            except RegistryError as exc:
                self._registry_failed(str(exc))
                self.sleep(self.backoff.next())
                return "error"

    def _wait_slice(self) -> float:
        """How long one registry wait may block. The prober's `changed` event cannot cut a
        registry wait short, so with probes on the wait is cut into half probe intervals:
        a flip is noticed within the time the prober needed to see it anyway."""
        interval = self.applier.policies.probe_interval
        if interval is None:
            return WAIT_SLICE
        return min(WAIT_SLICE, max(0.05, interval / 2))

    def _wait(self, version: str, timeout: float) -> bool:
        try:
            return self.source.wait(version, timeout)
        except (RegistryError, _Interrupted):
            raise
        except Exception as exc:  # an adapter bug must not end the loop either
            raise RegistryError(f"{type(exc).__name__}: {exc}") from exc

    def _schedule_due(self) -> float | None:
        """The last plan's next_change_at as a monotonic deadline (the plan's clock is
        wall time)."""
        next_change = self.applier.next_change
        if next_change is None:
            return None
        delay = (next_change - self.clock.wall()) / timedelta(seconds=1)
        return self.clock.monotonic() + max(0.0, delay) + SCHEDULE_MARGIN

    # --- signals ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        event(logging.INFO, f"{signal.Signals(signum).name}: finishing the current step")
        self.stopping = True
        if self._interruptible:
            raise _Interrupted

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload_spec = True
        if self._interruptible:
            raise _Interrupted

    def _idle(self, fn: Callable[..., bool], *args: Any) -> bool:
        """Run a blocking wait that a signal may cut short (then: False)."""
        try:
            try:
                self._interruptible = True
                if self.stopping or self.reload_spec:
                    return False
                return fn(*args)
            finally:
                self._interruptible = False
        except _Interrupted:
            return False

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` on the clock, cut short by a signal."""
        deadline = self.clock.monotonic() + seconds
        while not (self.stopping or self.reload_spec) and self.clock.monotonic() < deadline:
            self._idle(self._nap, min(NAP, deadline - self.clock.monotonic()))

    def _nap(self, seconds: float) -> bool:
        self.clock.sleep(seconds)
        return False

    def _reread_spec(self) -> None:
        """SIGHUP: read the spec and templates again; keep the old ones if broken."""
        self.reload_spec = False
        try:
            spec = load_spec(self.config_path)
            binary = nginx_for_test(spec, None, self.applier.cache.versions)
            ensure_runtime_dirs(spec)
        except (SpecError, NginxMissing, OSError) as exc:
            event(logging.ERROR, f"SIGHUP: spec not reloaded, keeping the running one: {exc}")
            return
        source = None
        if spec.registry != self.spec.registry or spec.service_names != self.spec.service_names:
            try:
                source = open_source(spec.registry, spec.service_names)
            except RegistryError as exc:  # e.g. a secret's variable is not set
                event(logging.ERROR, f"SIGHUP: spec not reloaded, keeping the running one: {exc}")
                return
        if source is not None:
            self.source.close()
            self.source = source
        self.spec = spec
        self.backoff = Backoff(spec.watch.backoff.initial, spec.watch.backoff.max)
        self.applier.adopt(spec, binary)
        event(logging.INFO, "SIGHUP: spec and templates reloaded", spec=str(self.config_path))
