"""`nginxgen watch`: keep a running nginx/OpenResty in step with the registry, unattended.

The loop, one step at a time:

    wait for a change ─▶ debounce ─▶ read ─▶ guard ─▶ plan+render ─▶ same text? stop
        ▲                                                   │
        └── record ◀── confirm ◀── reload ◀── install ◀── verify (crossplane, nginx -t)

Registry errors never end the loop: the last good catalog stays in force, reads are
retried with capped exponential backoff and jitter, and /healthz says the data is stale.
A config that fails verification is never installed; one that installs but does not
serve in time is rolled back. Either way the same text is not tried again until
something changes (registry, spec, templates, or the clock).
"""

from __future__ import annotations

import difflib
import logging
import random
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
from .diff import diff_plans
from .guard import RemovalHold
from .install import (
    WriteResult,
    confirm_generation,
    reload_nginx,
    remove_stale_temps,
    restore_backup,
    serving_generation,
    write_atomic,
)
from .nginx_bin import Binary
from .pipeline import build, nginx_for_test
from .plan import Plan, next_change_at
from .render import config_generation, environment, render_location, render_upstream
from .sources import RegistryError, Source, open_source
from .spec import Backoff as BackoffSpec
from .spec import Spec, SpecError, load_spec
from .telemetry import Health, Metrics, StatusServer, event

# Longest single block on the registry: SIGHUP, schedules and holds are noticed this fast.
WAIT_SLICE = 1.0


class Result(Enum):
    APPLIED = "applied"  # installed, reloaded, serving
    UNCHANGED = "unchanged"  # the running config already says this
    FAILED = "failed"  # not valid, or did not serve; the old config stays
    SKIPPED = "skipped"  # the same text failed before; wait for a change


class Backoff:
    """Capped exponential backoff with jitter: initial, 2x, 4x ... max, each 50-100%."""

    def __init__(self, config: BackoffSpec, rng: random.Random | None = None) -> None:
        self.config = config
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        base = min(self.config.max, self.config.initial * (2**self.failures))
        self.failures += 1
        return base * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        self.failures = 0


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
        self.health = Health()
        self.source: Source = source or open_source(spec.registry, spec.service_names)
        self.binary: Binary | None = nginx_for_test(spec, None)
        self.hold = RemovalHold(spec.watch.guard)
        self.backoff = Backoff(spec.watch.backoff)
        self.accepted: Catalog | None = None  # the effective catalog last planned with
        self.applied_plan: Plan | None = None
        self.failed_text: str | None = None  # do not retry this exact text
        self.last_read = 0.0
        self.stopping = False
        self.reload_spec = False
        self._interruptible = False
        self._said_in_place = False
        self._dropped_said: set[str] = set()
        self._nginx_running = True
        self._server: StatusServer | None = None
        if self.binary is None:
            event(logging.WARNING, "no nginx binary found: configs are checked by crossplane only")
        if not self.options.dry_run:
            for tmp in remove_stale_temps(spec.nginx.output):
                event(logging.INFO, f"removed {tmp}, left behind by an interrupted install")

    # --- lifecycle ---------------------------------------------------------------------

    def run(self) -> int:
        """Loop until SIGTERM/SIGINT (exit 0). With --once: 0 applied, 1 failed."""
        self._install_signals()
        if self.options.listen and self.spec.watch.listen != "off" and not self.options.once:
            self._server = StatusServer(self.spec.watch.listen, self.health, self.metrics).start()
            event(logging.INFO, "health and metrics listening", listen=self.spec.watch.listen)
        try:
            if self.options.once or self.options.dry_run:
                return self._one_pass()
            self._loop()
            return 0
        finally:
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
        first = True
        while not self.stopping:
            if self.reload_spec:
                self._reread_spec()
            try:
                catalog = self._read()
                if not first:
                    catalog = self._settle(catalog, changed_at)
            except RegistryError:
                self._sleep(self.backoff.next())
                continue
            self.backoff.reset()
            if self.stopping:
                break
            self._apply_safely(catalog, changed_at)
            first = False
            self._wait_for_change(catalog.version)
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
            retry_after=f"{self.backoff.config.initial:g}s..{self.backoff.config.max:g}s",
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

    def _wait_for_change(self, version: str) -> None:
        """Block until the registry moves, a planned change falls due, a held removal
        needs another look, a resync is due, or a signal asks for attention."""
        due = self._schedule_due()
        while not (self.stopping or self.reload_spec):
            now = time.monotonic()
            deadline = self.last_read + self.spec.watch.resync
            if self.hold.holding:
                deadline = min(deadline, self.last_read + self.hold.recheck_every)
            if due is not None:
                deadline = min(deadline, due)
            if now >= deadline:
                return
            timeout = min(WAIT_SLICE, deadline - now)
            try:
                if self._idle(self._wait, version, timeout):
                    return
            except RegistryError as exc:
                self._registry_failed(str(exc))
                self._sleep(self.backoff.next())
                return

    def _wait(self, version: str, timeout: float) -> bool:
        try:
            return self.source.wait(version, timeout)
        except (RegistryError, _Interrupted):
            raise
        except Exception as exc:  # an adapter bug must not end the loop either
            raise RegistryError(f"{type(exc).__name__}: {exc}") from exc

    def _schedule_due(self) -> float | None:
        """next_change_at as a monotonic deadline (the plan's clock is wall time)."""
        if self.accepted is None:
            return None
        now = datetime.now(timezone.utc)
        at = next_change_at(self.spec, self.accepted, now)
        if at is None:
            return None
        return time.monotonic() + max(0.0, (at - now) / timedelta(seconds=1))

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

    def apply(self, catalog: Catalog, changed_at: float) -> Result:
        """guard → plan → render → verify → install → reload → confirm → record."""
        guarded = self.hold.check(self.accepted, catalog, time.monotonic())
        for reason in guarded.released:
            event(logging.WARNING, f"removal confirmed by consecutive reads: {reason}")
        if guarded.held:
            for reason in guarded.held.reasons:
                event(logging.WARNING, f"holding a sudden removal until confirmed: {reason}")
        self.health.held = "; ".join(guarded.held.reasons) if guarded.held else ""
        self.metrics.held.set(len(guarded.held.keys) if guarded.held else 0)
        self.accepted = effective = guarded.catalog
        self.metrics.set_catalog(effective)

        result = build(self.spec, effective, binary=self.binary)
        self.metrics.renders.inc()
        text, plan = result.text, result.plan
        output = Path(self.spec.nginx.output)
        installed = _read_text(output)
        generation = config_generation(text) or ""

        if self.options.dry_run:
            return self._dry_run(installed, text, result.verdict.ok, result.verdict.findings)
        if text == installed and self._serving(generation):
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

        written = write_atomic(output, text) if text != installed else None
        if written and written.in_place and not self._said_in_place:
            self._said_in_place = True
            event(logging.WARNING, f"{output}: rename impossible (bind mount?); writing in place")
        outcome = self._reload_and_confirm(generation, written)
        if outcome is not None:
            return self._failed(text, outcome)
        diff = diff_plans(self.applied_plan, plan)
        event(
            logging.INFO,
            f"{'reloaded' if self._nginx_running else 'installed'}: {diff.summary()}",
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

    def _reload_and_confirm(self, generation: str, written: WriteResult | None) -> str | None:
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
        self.metrics.reloads.inc()
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
        if written is None or not restore_backup(written):
            event(logging.ERROR, "no previous config to restore")
            return
        self.metrics.rollbacks.inc()
        if reload_again:
            again = reload_nginx(self.spec.nginx, self.binary)
            event(logging.ERROR, "restored the previous config", reload=again.message)
        else:
            event(logging.ERROR, "restored the previous config")

    def _serving(self, generation: str) -> bool:
        """Is the running nginx on this generation (or is there no way to tell)?"""
        listen = self.spec.nginx.status_listen
        if listen == "off" or self.applied_plan is not None:
            return True  # checked when we applied it
        seen = serving_generation(listen)
        return seen is None or seen == generation  # None: nginx not running; nothing to do

    def _succeeded(self, plan: Plan, generation: str, changed_at: float, *, observe: bool) -> None:
        self.applied_plan = plan
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
        except SpecError as exc:
            event(logging.ERROR, f"SIGHUP: spec not reloaded, keeping the running one: {exc}")
            return
        for cache in (environment, render_upstream, render_location):
            cache.cache_clear()
        if spec.registry != self.spec.registry or spec.service_names != self.spec.service_names:
            self.source.close()
            self.source = open_source(spec.registry, spec.service_names)
        self.spec = spec
        self.binary = nginx_for_test(spec, None)
        self.hold = RemovalHold(spec.watch.guard)
        self.backoff = Backoff(spec.watch.backoff)
        self.failed_text = None
        event(logging.INFO, "SIGHUP: spec and templates reloaded", spec=str(self.config_path))


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
