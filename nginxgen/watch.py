"""`nginxgen watch`: keep a running nginx/OpenResty in step with the registry, unattended.

The loop, one step at a time:

    wait for a change ─▶ debounce ─▶ read ─▶ guard ─▶ observe ─▶ plan+render ─▶ same text? stop
        ▲                                                               │
        └── record ◀── confirm ◀── reload ◀── install ◀── verify (crossplane, nginx -t)

A change is a registry event, a warm-up step falling due (the plan's next_change_at), the
prober finding an instance pseudo-dead or healthy again, or a SIGHUP. `observe` hands the
plan what the traffic policies saw over time (first-seen times from the state file, the
prober's dead set); the state file is saved once a config built from it serves.

Registry errors never end the loop: the last good catalog stays in force, reads are
retried with capped exponential backoff and jitter, and /healthz says the data is stale.
A config that fails verification is never installed; one that installs but does not
serve in time is rolled back to exactly the bytes that were there (or to no file). Either
way the same text is not tried again until something changes (registry, spec, templates,
or the clock). An instance that flaps is pinned until it is stable (flap.py), so it costs
no reload per debounce window.
"""

from __future__ import annotations

import difflib
import errno
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any

from . import heap
from .catalog import Catalog
from .cert_watch import CertificateFiles
from .diff import diff_plans
from .flap import FlapDamper
from .guard import RemovalHold
from .install import (
    InstallError,
    WriteResult,
    confirm_generation,
    find_master,
    reload_nginx,
    remove_stale_temps,
    restore_previous,
    serving_generation,
    write_atomic,
)
from .nginx_bin import Binary
from .pipeline import (
    NginxMissing,
    build,
    ensure_runtime_dirs,
    nginx_for_test,
    untested_warning,
)
from .plan import Plan
from .policies import Policies, warming_count
from .policy_state import state_path
from .render import config_generation, environment, render_location, render_upstream
from .sources import RegistryError, Source, open_source
from .spec import Spec, SpecError, load_spec
from .telemetry import Health, Metrics, StatusServer, event
from .tls.certs import certificate_files
from .util.backoff import Backoff

# Longest single block on the registry: SIGHUP, schedules and holds are noticed this fast.
WAIT_SLICE = 1.0
# Wake this much after a warm-up step boundary, so the plan surely sees the new step.
SCHEDULE_MARGIN = 0.01
# /healthz asks nginx's status listener whether the generation serves; never for longer.
HEALTH_PROBE_TIMEOUT = 0.5
# Reload reasons as the log line says them (telemetry.RELOAD_REASONS are the metric labels).
REASON_WORDS = {
    "start": "first config of this run",
    "spec": "spec reloaded",
    "registry": "registry changed",
    "probe": "health probes changed",
    "warmup": "warm-up step",
    "certificate": "certificate file changed",
}


class Result(Enum):
    APPLIED = "applied"  # installed, reloaded, serving
    UNCHANGED = "unchanged"  # the running config already says this
    FAILED = "failed"  # not valid, or did not serve; the old config stays
    SKIPPED = "skipped"  # the same text failed before; wait for a change


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
    ) -> None:
        self.config_path = config_path
        self.spec = spec
        self.options = options or Options()
        self.metrics = Metrics()
        self.health = Health(served=self._not_served)
        self.binary: Binary | None = nginx_for_test(spec, None)  # NginxMissing: exit 2
        # Bound before anything is touched: a second watcher stops here, harmlessly.
        self._server: StatusServer | None = self._bind()
        self.source: Source = source or open_source(spec.registry, spec.service_names)
        self.hold = RemovalHold(spec.watch.guard)
        self.flaps = FlapDamper(spec.watch.flap)
        self.backoff = Backoff(spec.watch.backoff.initial, spec.watch.backoff.max)
        self.accepted: Catalog | None = None  # the guard's catalog last planned with
        self.applied_plan: Plan | None = None
        # Traffic policies: warm-up state file, pseudo-dead probes (started by `run`).
        self.policies = Policies(spec)
        self.next_change: datetime | None = None  # the last plan's next warm-up step
        self._observed_dead: frozenset[str] = frozenset()  # in the last build
        self._applied_dead: frozenset[str] = frozenset()  # in the config that serves
        self._spec_reloaded = False  # since the last successful apply
        self.certs = CertificateFiles(certificate_files(spec))
        self.failed_text: str | None = None  # do not retry this exact text
        self.last_read = 0.0
        self.stopping = False
        self.reload_spec = False
        self._interruptible = False
        self._said_in_place = False
        self._dropped_said: set[str] = set()
        self._nginx_running = True
        if self.binary is None:
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

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Loop until SIGTERM/SIGINT (exit 0). With --once: 0 applied, 1 failed."""
        self._install_signals()
        if self._server is not None:
            self._server.start()
            event(logging.INFO, "health and metrics listening", listen=self.spec.watch.listen)
        try:
            if self.options.once or self.options.dry_run:
                return self._one_pass()  # the ramp as it stands now; no probes, no waiting
            self.policies.start()
            self._loop()
            return 0
        finally:
            self.policies.close()
            if self._server:
                self._server.stop()
            self.source.close()
            event(logging.INFO, "stopped")

    def _one_pass(self) -> int:
        try:
            catalog = self._read()
        except RegistryError:
            return 1
        result = self._apply_safely(catalog, time.monotonic())
        return 0 if result in (Result.APPLIED, Result.UNCHANGED) else 1

    def _loop(self) -> None:
        changed_at = time.monotonic()
        woke = "start"  # what ended the last wait (see _wait_for_change)
        while not self.stopping:
            if self.reload_spec:
                self._reread_spec()
            try:
                if woke == "probe":
                    # Instances failing together flip within moments: one reload for all.
                    self._sleep(self.spec.watch.debounce.min)
                catalog = self._read()
                if woke == "registry":
                    catalog = self._settle(catalog, changed_at)
            except RegistryError:
                if woke in ("probe", "warmup") and self.accepted is not None:
                    # Probe verdicts and ramp steps do not wait for the registry to return.
                    self._apply_safely(self.accepted, changed_at)
                    woke = "error"
                self._sleep(self.backoff.next())
                continue
            self.backoff.reset()
            if self.stopping:
                break
            self._apply_safely(catalog, changed_at)
            woke = self._wait_for_change(catalog.version)
            changed_at = time.monotonic()

    # --- the steps ---------------------------------------------------------------------

    def _read(self) -> Catalog:
        """One registry read; failures are counted, logged and marked stale, then re-raised."""
        try:
            catalog = self.source.read()
        except RegistryError as exc:
            self._registry_failed(str(exc))
            raise
        except Exception as exc:  # an adapter bug must not end the loop either
            self._registry_failed(f"{type(exc).__name__}: {exc}")
            raise RegistryError(str(exc)) from exc
        self.metrics.reads.inc()
        self.last_read = time.monotonic()
        self.flaps.observe(catalog, self.last_read)
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
            self.health.stale_since = time.time()
        self.health.stale_reason = message
        event(
            logging.ERROR,
            "registry unavailable; keeping the last good catalog",
            error=message,
            retry_after=f"{self.backoff.initial:g}s..{self.backoff.cap:g}s",
        )

    def _settle(self, catalog: Catalog, first_change: float) -> Catalog:
        """Debounce: wait until the registry is quiet for `min`, at most `max` in all.

        Every event inside the window is read (so the last state wins) but nothing is
        rendered until the window closes: 100 events give one reload.
        """
        window = self.spec.watch.debounce
        latest = first_change + window.max
        while not self.stopping:
            quiet_until = min(time.monotonic() + window.min, latest)
            remaining = quiet_until - time.monotonic()
            if remaining <= 0:
                break
            try:
                moved = self._idle(self._wait, catalog.version, remaining)
            except RegistryError as exc:
                self._registry_failed(str(exc))
                raise
            if not moved:
                break
            catalog = self._read()
        return catalog

    def _wait_for_change(self, version: str) -> str:
        """Block until the registry moves ("registry"), a warm-up step falls due
        ("warmup"), the prober's verdict changes ("probe"), a held removal needs another
        look ("hold"), a flapping instance is due for release ("flap"), a resync is due
        ("resync"), waiting failed ("error"), or a signal asks for attention ("spec",
        "stop"). Returns which."""
        due = self._schedule_due()
        slice_ = self._wait_slice()
        while True:
            if self.stopping:
                return "stop"
            if self.reload_spec:
                return "spec"
            if self.certs.changed():
                self.failed_text = None  # a new file is a change, even for the same text
                return "certificate"
            if self.policies.changed.is_set():
                return "probe"
            now = time.monotonic()
            deadline, why = self.last_read + self.spec.watch.resync, "resync"
            if self.hold.holding and self.last_read + self.hold.recheck_every < deadline:
                deadline, why = self.last_read + self.hold.recheck_every, "hold"
            release = self.flaps.next_release()
            if release is not None and release < deadline:
                deadline, why = release, "flap"
            if due is not None and due < deadline:
                deadline, why = due, "warmup"
            if now >= deadline:
                return why
            timeout = min(slice_, deadline - now)
            try:
                if self._idle(self._wait, version, timeout):
                    return "registry"
            except RegistryError as exc:
                self._registry_failed(str(exc))
                self._sleep(self.backoff.next())
                return "error"

    def _wait_slice(self) -> float:
        """How long one registry wait may block. The prober's `changed` event cannot cut a
        registry wait short, so with probes on the wait is cut into half probe intervals:
        a flip is noticed within the time the prober needed to see it anyway."""
        interval = self.policies.probe_interval
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
        if self.next_change is None:
            return None
        delay = (self.next_change - datetime.now(timezone.utc)) / timedelta(seconds=1)
        return time.monotonic() + max(0.0, delay) + SCHEDULE_MARGIN

    def _apply_safely(self, catalog: Catalog, changed_at: float) -> Result:
        """`apply`, but a failure nobody planned for (disk full, a template error) is
        reported like any failed apply: the sidecar must outlive it."""
        try:
            return self.apply(catalog, changed_at)
        except Exception as exc:  # noqa: BLE001 - the loop must not die; the log says what
            why = f"{type(exc).__name__}: {exc}"
            self.health.applied, self.health.apply_error = False, why
            event(logging.ERROR, f"apply failed unexpectedly: {why}; will retry")
            return Result.FAILED

    def _not_served(self, generation: str) -> str | None:
        """For /healthz: None when nginx serves `generation`, else why not. Cheap: one
        loopback request with a short timeout, or (no status listener) a look at the
        master's pid."""
        nginx = self.spec.nginx
        if self.options.dry_run:
            return None
        if nginx.status_listen != "off":
            seen = serving_generation(nginx.status_listen, timeout=HEALTH_PROBE_TIMEOUT)
            if seen == generation:
                return None
            if seen is None:
                return f"nginx does not answer on its status listener {nginx.status_listen}"
            return f"nginx serves generation {seen}, not {generation}"
        pid, why = find_master(nginx.pid)
        return None if pid is not None else f"nginx is not running ({why})"

    def apply(self, catalog: Catalog, changed_at: float) -> Result:
        """guard → observe → plan → render → verify → install → reload → confirm → record."""
        self.next_change = None  # until this pass plans again: never wake on a stale step
        guarded = self.hold.check(self.accepted, catalog, time.monotonic())
        for reason in guarded.released:
            event(logging.WARNING, f"removal confirmed by consecutive reads: {reason}")
        if guarded.held:
            for reason in guarded.held.reasons:
                event(logging.WARNING, f"holding a sudden removal until confirmed: {reason}")
        self.health.held = "; ".join(guarded.held.reasons) if guarded.held else ""
        self.metrics.held.set(len(guarded.held.keys) if guarded.held else 0)
        self.accepted = guarded.catalog
        damped = self.flaps.apply(guarded.catalog, time.monotonic())
        for line in damped.started:
            event(logging.WARNING, line)
        for line in damped.released:
            event(logging.INFO, line)
        self.health.flapping = ", ".join(damped.held)
        self.metrics.flap_held.set(len(damped.held))
        effective = damped.catalog
        self.metrics.set_catalog(effective)

        now = datetime.now(timezone.utc)
        observed = self.policies.observe(effective, now)
        self._observed_dead = observed.dead
        result = build(self.spec, effective, binary=self.binary, now=now, observed=observed)
        self.metrics.renders.inc()
        text, plan = result.text, result.plan
        self.next_change = plan.next_change_at
        self.metrics.warming.set(warming_count(plan))
        self.metrics.pseudo_dead.set(len(observed.dead))
        output = Path(self.spec.nginx.output)
        installed = _read_text(output)
        generation = config_generation(text) or ""

        if self.options.dry_run:
            return self._dry_run(installed, text, result.verdict.ok, result.verdict.findings)
        if text == installed and self._serving(generation) and not self.certs.pending:
            self._succeeded(plan, generation, changed_at, observe=False)
            return Result.UNCHANGED
        if text == self.failed_text:
            return Result.SKIPPED
        if not result.verdict.ok:
            self.metrics.validation_failures.inc()
            first = str(result.verdict.findings[0])
            event(
                logging.ERROR,
                "rendered config is invalid; not installed, nginx keeps the running one",
                findings=[str(f) for f in result.verdict.findings[:10]],
            )
            return self._failed(text, f"validation: {first}")

        try:
            written = write_atomic(output, text) if text != installed else None
        except InstallError as exc:
            # Nothing changed on disk. Not remembered as failed text: once the disk has
            # room again (or the path is fixed) the same config goes in on the next pass.
            why = f"install: {exc}"
            self.health.applied, self.health.apply_error = False, why
            event(logging.ERROR, f"apply failed: {why}; nginx keeps the running config")
            return Result.FAILED
        if written and written.in_place and not self._said_in_place:
            self._said_in_place = True
            event(logging.WARNING, f"{output}: rename impossible (bind mount?); writing in place")
        reason = self._reason(plan)
        try:
            outcome = self._reload_and_confirm(generation, written, reason)
        except Exception:
            # Whatever broke between install and confirm, the file goes back to what it was.
            self._rollback(written, reload_again=True)
            raise
        if outcome is not None:
            return self._failed(text, outcome)
        diff = diff_plans(self.applied_plan, plan)
        verb = "reloaded" if self._nginx_running else "installed"
        event(
            logging.INFO,
            f"{verb}: {diff.summary()} ({REASON_WORDS[reason]})",
            reason=reason,
            generation=generation,
            upstreams=len(plan.upstreams),
            servers=plan.server_count,
            **diff.as_dict(),
        )
        for note in plan.notes:
            event(logging.INFO, f"note: {note}")
        self._succeeded(plan, generation, changed_at, observe=True)
        settle_heap()  # after the reload: off the change-to-served path
        return Result.APPLIED

    def _reason(self, plan: Plan) -> str:
        """Why this config differs from the one serving (telemetry.RELOAD_REASONS)."""
        last = self.applied_plan
        if last is None:
            return "start"
        if self._spec_reloaded:
            return "spec"
        if self.certs.pending:
            return "certificate"
        if plan.catalog_fingerprint != last.catalog_fingerprint:
            return "registry"
        if self._observed_dead != self._applied_dead:
            return "probe"
        # Same spec, registry and probe verdicts: only the clock moved a ramp on.
        return "warmup" if last.next_change_at is not None else "registry"

    def _reload_and_confirm(
        self, generation: str, written: WriteResult | None, reason: str
    ) -> str | None:
        """None when the new config serves; else why not (after rolling back)."""
        nginx = self.spec.nginx
        reload = reload_nginx(nginx, self.binary)
        self._nginx_running = reload.running
        if not reload.running:
            event(logging.WARNING, f"installed; {reload.message}: it starts on the new config")
            return None
        if not reload.ok:
            self.metrics.reload_failures.inc()
            self._rollback(written, reload_again=False)
            return f"reload: {reload.message}"
        self.metrics.reloads.labels(reason).inc()
        if nginx.status_listen == "off":
            return None
        seen = confirm_generation(nginx.status_listen, generation, self.spec.watch.confirm_timeout)
        if seen.ok:
            return None
        self.metrics.reload_failures.inc()
        self._rollback(written, reload_again=True)
        answered = seen.seen or "nothing"
        timeout = self.spec.watch.confirm_timeout
        return (
            f"nginx did not serve generation {generation} within {timeout:g}s "
            f"(its status listener answered {answered})"
        )

    def _rollback(self, written: WriteResult | None, *, reload_again: bool) -> None:
        """Leave on disk exactly what was there before this apply: the old bytes, or no
        file when there was none (the next nginx start must not pick up a config that
        failed), then reload nginx onto the old bytes if it was reloaded onto the new."""
        if written is None or not written.changed:
            output = self.spec.nginx.output
            event(logging.ERROR, f"{output} held this config before this apply; left as it was")
            return
        try:
            what = restore_previous(written)
        except InstallError as exc:
            event(logging.ERROR, f"rollback failed: {exc}")
            return
        self.metrics.rollbacks.inc()
        if reload_again and written.previous is not None:
            again = reload_nginx(self.spec.nginx, self.binary)
            event(logging.ERROR, what, reload=again.message)
        else:
            event(logging.ERROR, what)

    def _serving(self, generation: str) -> bool:
        """Is the running nginx on this generation (or is there no way to tell)?"""
        listen = self.spec.nginx.status_listen
        if listen == "off" or self.applied_plan is not None:
            return True  # checked when we applied it
        seen = serving_generation(listen)
        return seen is None or seen == generation  # None: nginx not running; nothing to do

    def _succeeded(self, plan: Plan, generation: str, changed_at: float, *, observe: bool) -> None:
        self.applied_plan = plan
        self.certs.served()
        self._applied_dead = self._observed_dead
        self._spec_reloaded = False
        self.policies.installed()  # first-seen times count from a config that serves
        self.failed_text = None
        self.health.applied, self.health.apply_error = True, ""
        self.health.generation = generation
        self.metrics.last_sync.set(time.time())
        if observe:
            self.metrics.latency.observe(time.monotonic() - changed_at)

    def _failed(self, text: str, why: str) -> Result:
        self.failed_text = text
        self.health.applied, self.health.apply_error = False, why
        event(logging.ERROR, f"apply failed: {why}; retrying when something changes")
        return Result.FAILED

    def _dry_run(self, installed: str | None, text: str, ok: bool, findings: Any) -> Result:
        from rich.console import Console
        from rich.text import Text

        out = Console(highlight=False)
        lines = difflib.unified_diff(
            (installed or "").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{self.spec.nginx.output} (installed)",
            tofile=f"{self.spec.nginx.output} (candidate)",
        )
        styles = {"+": "green", "-": "red", "@": "cyan"}
        for line in lines:
            out.print(Text(line.rstrip("\n"), style=styles.get(line[:1], "")), soft_wrap=True)
        if not ok:
            for finding in findings:
                event(logging.ERROR, f"candidate is invalid: {finding}")
            return Result.FAILED
        return Result.UNCHANGED if installed == text else Result.APPLIED

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

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not (self.stopping or self.reload_spec) and time.monotonic() < deadline:
            self._idle(_nap, min(0.5, deadline - time.monotonic()))

    def _reread_spec(self) -> None:
        """SIGHUP: read the spec and templates again; keep the old ones if broken."""
        self.reload_spec = False
        try:
            spec = load_spec(self.config_path)
            binary = nginx_for_test(spec, None)
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
        for cache in (environment, render_upstream, render_location):
            cache.cache_clear()
        if source is not None:
            self.source.close()
            self.source = source
        self.spec = spec
        self.binary = binary
        self.certs = CertificateFiles(certificate_files(spec))  # the spec reload reloads them
        self.hold = RemovalHold(spec.watch.guard)
        if spec.watch.flap != self.flaps.config:
            self.flaps = FlapDamper(spec.watch.flap)
        self.backoff = Backoff(spec.watch.backoff.initial, spec.watch.backoff.max)
        self.failed_text = None
        self._reload_policies(spec)
        self._spec_reloaded = True
        event(logging.INFO, "SIGHUP: spec and templates reloaded", spec=str(self.config_path))

    def _reload_policies(self, spec: Spec) -> None:
        """Keep the policies (and the prober's verdicts) when their settings stay;
        otherwise start afresh, keeping the state file's times when its path stays."""
        if self.policies.reusable_for(spec):
            self.policies.adopt(spec)
            return
        old = self.policies
        same_file = state_path(spec) == state_path(old.spec)
        old.close()
        self.policies = Policies(spec, state=old.state if same_file else None).start()
        # The new prober knows nothing yet: the next pass plans without pseudo-dead ones.
        event(logging.INFO, "SIGHUP: probe or state file settings changed; policies start afresh")


def settle_heap() -> None:
    """Collect, then move the survivors (plan, caches) out of the collector's sight.

    With 10,000 services the render caches hold hundreds of thousands of objects, and a
    full collection walking them all would land in the middle of most applies. This runs
    after the reload, off the change-to-served path; heap.settle says when it is full.
    """
    heap.settle()


def _nap(seconds: float) -> bool:
    time.sleep(max(0.0, seconds))
    return False


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
