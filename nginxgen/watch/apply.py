"""One apply of the sidecar: guard → observe → build → install → reload → confirm → record.

The loop (loop.py) decides *when*; the Applier decides nothing about time, only what to do
with one catalog, and answers with an Outcome that says what happened at each step.

A config that fails verification is never installed; one that installs but does not
serve in time is rolled back to exactly the bytes that were there (or to no file). Either
way the same text is not tried again until something changes (registry, spec, templates,
or the clock). An instance that flaps is pinned until it is stable (flap.py), so it costs
no reload per debounce window.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from ..deploy.confirm import serving_generation
from ..deploy.feed import (
    FeedClient,
    Generations,
    Persisted,
    Pushed,
    SnapshotTexts,
    push_endpoints,
    snapshot_generation,
)
from ..deploy.install import Installed, install
from ..deploy.nginx_bin import Binary
from ..deploy.reload import find_master
from ..deploy.workers import Worker
from ..model.catalog import Catalog
from ..model.plan import Plan, same_structure
from ..pipeline import Build, BuildCache, build, plan_pass
from ..plan.endpoints import EndpointSet, changed_endpoints
from ..render import config_generation
from ..render.blocks import TemplateError
from ..spec import Spec
from ..spec.watch import Debounce
from ..tls.certs import certificate_files
from ..util.atomic_write import InstallError
from ..util.clock import Clock
from ..util.heap import Settler, without_collector
from ..util.token_file import TokenFileError, read_token
from .adopt import feed_generation, read_served, same_but_endpoints, served_delta
from .certs import CertificateFiles
from .diff import diff_plans, show_text_diff
from .flap import FlapDamper
from .guard import RemovalHold
from .policies import Policies, warming_count
from .policy_state import state_path
from .recovery import HookRun
from .split_apply import SplitApply
from .telemetry import Health, Metrics, event
from .templates import TemplateFiles

# /healthz asks nginx's status listener whether the generation serves; never for longer.
HEALTH_PROBE_TIMEOUT = 0.5
# /healthz counts a config being installed as healthy for its confirm timeout plus this
# (the write and the reload signal come before the confirmation's clock starts).
IN_FLIGHT_MARGIN = 2.0
# Reload reasons as the log line says them (telemetry.RELOAD_REASONS are the metric labels).
REASON_WORDS = {
    "start": "first config of this run",
    "spec": "spec reloaded",
    "registry": "registry changed",
    "probe": "health probes changed",
    "warmup": "warm-up step",
    "certificate": "certificate file changed",
    "templates": "template file changed",
    "push": "the endpoint push was not applied",
}


class Result(Enum):
    APPLIED = "applied"  # installed, reloaded, serving — or pushed and confirmed
    UNCHANGED = "unchanged"  # the running config already says this
    FAILED = "failed"  # not valid, or did not serve; the old config stays
    SKIPPED = "skipped"  # the same text failed before; wait for a change


@dataclass(frozen=True)
class Outcome:
    """What one apply did. `installed` is the install step's own record, None when nothing
    was installed (unchanged, skipped, invalid, a dry run)."""

    result: Result
    installed: Installed | None = None
    reason: str = ""  # why the config differs from the one serving (RELOAD_REASONS)
    error: str = ""  # why it failed, as /healthz says it
    # nginx.endpoints dynamic: the push this apply tried (confirmed: no reload needed;
    # anything else was followed by the reload `installed` says)
    pushed: Pushed | None = None

    @property
    def written(self) -> bool:
        return self.installed is not None and self.installed.written is not None

    @property
    def reloaded(self) -> bool:
        return self.installed is not None and self.installed.reloaded

    @property
    def confirmed(self) -> bool:
        return self.installed is not None and self.installed.confirmed

    @property
    def rolled_back(self) -> bool:
        return self.installed is not None and self.installed.rolled_back


@dataclass(frozen=True)
class Settled:
    """How the loop came to an apply, for the push's log line: seconds from the change
    being noticed to the registry being quiet (the debounce), and of the last read."""

    debounce: float = 0.0
    read: float = 0.0


class Applier:
    """What the sidecar remembers between applies: the guard's and the flap damper's
    state, the traffic policies, the config that serves, and the BuildCache."""

    def __init__(
        self,
        spec: Spec,
        binary: Binary | None,
        *,
        metrics: Metrics,
        health: Health,
        clock: Clock,
        cache: BuildCache,
        dry_run: bool = False,
    ) -> None:
        self.spec = spec
        self.binary = binary
        self.metrics = metrics
        self.health = health
        self.clock = clock
        self.cache = cache
        self.dry_run = dry_run
        self.hold = RemovalHold(spec.watch.guard)
        self.flaps = FlapDamper(spec.watch.flap)
        # Traffic policies: warm-up state file, pseudo-dead probes (started by the loop).
        self.policies = Policies(spec, clock=clock, on_recovery=self._count_recovery)
        self.accepted: Catalog | None = None  # the guard's catalog last planned with
        self.applied_plan: Plan | None = None  # the config that serves
        self.last_plan: Plan | None = None  # the last one built (/status: planned weights)
        # (service, instance id) → why the catalog planned with is not the registry's for
        # it: a removal held, a flapping instance pinned (/status says so).
        self.kept: dict[tuple[str, str], str] = {}
        # Called after every apply, whatever came of it (the loop refreshes gauges there).
        self.after_apply: Callable[[], None] = lambda: None
        self.next_change: datetime | None = None  # the last plan's next warm-up step
        self.failed_text: str | None = None  # do not retry this exact text
        self.heap = Settler()
        self._observed_dead: frozenset[str] = frozenset()  # in the last build
        self._applied_dead: frozenset[str] = frozenset()  # in the config that serves
        self._spec_reloaded = False  # since the last successful apply
        self.certs = CertificateFiles(certificate_files(spec))
        self.templates = TemplateFiles(spec.templates_dir)
        self._said_in_place = False
        self._nginx_running = True
        self.splits = SplitApply(clock, metrics)  # split pushes and guards (split_apply.py)
        # nginx.endpoints dynamic: one generation counter for pushes and snapshots, above
        # whatever the snapshot of an earlier run holds.
        self.generations = Generations(clock)
        self.generations.observe(snapshot_generation(spec.nginx.snapshot_path))
        self.snapshots = SnapshotTexts()  # the snapshot's text and journal (deploy/feed.py)
        self._journal_note = ""  # why the journal cannot be used, as last logged
        self._trusted: int | None = None  # first pass: the snapshot's generation, the feed's too
        health.served = self.not_served

    def adopt(self, spec: Spec, binary: Binary | None) -> None:
        """SIGHUP: carry on under a reloaded spec and templates."""
        self.spec = spec
        self.binary = binary
        self.cache.reload_templates(spec.templates_dir)
        self.hold = RemovalHold(spec.watch.guard)
        self.certs = CertificateFiles(certificate_files(spec))  # the spec reload reloads them
        self.templates = TemplateFiles(spec.templates_dir)
        if spec.watch.flap != self.flaps.config:
            self.flaps = FlapDamper(spec.watch.flap)
        self.failed_text = None
        self._reload_policies(spec)
        self._spec_reloaded = True

    def _count_recovery(self, run: HookRun) -> None:
        """From the prober's threads: nginxgen_recoveries_total{result}."""
        self.metrics.recoveries.labels(run.result).inc()

    def _reload_policies(self, spec: Spec) -> None:
        """Keep the policies (and the prober's verdicts) when their settings stay;
        otherwise start afresh, keeping the state file's times when its path stays."""
        if self.policies.reusable_for(spec):
            self.policies.adopt(spec)
            return
        old = self.policies
        same_file = state_path(spec) == state_path(old.spec)
        old.close()
        state = old.state if same_file else None
        self.policies = Policies(
            spec, state=state, clock=self.clock, on_recovery=self._count_recovery
        ).start()
        # The new prober knows nothing yet: the next pass plans without pseudo-dead ones.
        event(logging.INFO, "SIGHUP: probe or state file settings changed; policies start afresh")

    def apply_safely(
        self, catalog: Catalog, changed_at: float, settled: Settled | None = None
    ) -> Outcome:
        """`apply`, but a failure nobody planned for (disk full, a template error) is
        reported like any failed apply: the sidecar must outlive it."""
        try:
            return self.apply(catalog, changed_at, settled)
        except Exception as exc:  # noqa: BLE001 - the loop must not die; the log says what
            why = f"{type(exc).__name__}: {exc}"
            self.health.applied, self.health.apply_error = False, why
            event(logging.ERROR, f"apply failed unexpectedly: {why}; will retry")
            return Outcome(Result.FAILED, error=why)
        finally:
            try:
                self.after_apply()
            except Exception as exc:  # noqa: BLE001 - gauges must not stop the loop either
                event(logging.ERROR, f"after apply: {type(exc).__name__}: {exc}")

    @without_collector
    def apply(self, catalog: Catalog, changed_at: float, settled: Settled | None = None) -> Outcome:
        """guard → observe → plan → render → verify → install → reload → confirm → record.

        `changed_at` (monotonic) is when the change was noticed: the change-to-served
        latency is measured from there. `settled` says how the loop got here (a push's
        log line breaks its time down into stages). The cycle collector waits
        (util/heap.py): at 10,000 services one of its full runs costs more than a whole
        push; the heap is settled after the push or the reload instead."""
        started = self.clock.monotonic()
        self.next_change = None  # until this pass plans again: never wake on a stale step
        effective = self.splits.catalog(self._guard(catalog))
        now = self.clock.wall()
        observed = self.policies.observe(effective, now)
        self._observed_dead = observed.dead
        pushed: Pushed | None = None
        if self._pushes():
            # Endpoints only (same structure as the config serving): a push, no render.
            try:
                planned = plan_pass(
                    self.spec, effective, cache=self.cache, now=now, observed=observed
                )
            except TokenFileError:
                planned = None  # build says why
            last = self.applied_plan
            if planned is not None and last is not None and same_structure(last, planned):
                self._planned(planned, len(observed.dead))
                delta = changed_endpoints(last, planned)
                # The split documents go before the endpoints when a version loses its last
                # instance (no request is sent to an emptied upstream), after them otherwise.
                split = retract = self.splits.retracts(planned)
                if retract:
                    self.splits.push_if_changed(self.spec, self.binary, planned)
                if not delta:
                    split = self.splits.push_if_changed(self.spec, self.binary, planned) or split
                    self.snapshots.advance(last, planned)  # the disk holds it as it held last
                    self._succeeded(planned, self.health.generation, changed_at, observe=split)
                    return Outcome(Result.APPLIED if split else Result.UNCHANGED)
                reason = self._reason(planned)
                stages = settled or Settled()
                took = {"debounce": stages.debounce, "read": stages.read}
                took["plan"] = self.clock.monotonic() - started
                pushed = self._push(planned, delta, reason, took)
                if pushed.ok:
                    self.splits.push_if_changed(self.spec, self.binary, planned)
                    self._succeeded(planned, self.health.generation, changed_at, observe=True)
                    self.heap.settle_light()  # confirmed: off the change-to-served path
                    return Outcome(Result.APPLIED, reason=reason, pushed=pushed)
        result = build(
            self.spec,
            effective,
            binary=self.binary,
            cache=self.cache,
            now=now,
            observed=observed,
            conf_dir=Path(self.spec.nginx.output).absolute().parent,  # Lua modules go there
        )
        self.metrics.renders.inc()
        text, plan = result.text, result.plan
        self._planned(plan, len(observed.dead))
        output = Path(self.spec.nginx.output)
        installed = _read_text(output)
        generation = config_generation(text) or ""

        if self.dry_run:
            return self._dry_run(installed, text, result.verdict.ok, result.verdict.findings)
        if (
            pushed is None
            and text == installed
            and self._serving(generation)
            and not self.certs.pending
        ):
            if plan.feed is not None and self._nginx_up():
                # The text matches, but what the workers hold may not: pushes since it
                # was rendered, or an earlier run's (a sidecar restart). Send the rest.
                delta = self._served_delta(plan)
                if delta:
                    why = "start" if self.applied_plan is None else self._reason(plan)
                    first = self._push(plan, delta, why)
                    if not first.ok:
                        return self._install(result, installed, generation, changed_at, first)
                else:
                    self._on_disk_as(plan)
            # Only split weights changed (nginx.conf does not hold them): a push.
            split = self.splits.push_if_changed(self.spec, self.binary, plan)
            starting = self.applied_plan is None
            self._succeeded(plan, generation, changed_at, observe=split)
            if starting:
                # The first pass of a run settles the heap in full, as a reload does;
                # otherwise the first push after it would (~0.5 s at 10,000 services).
                self.heap.settle()
            return Outcome(Result.APPLIED if split else Result.UNCHANGED)
        if text == self.failed_text:
            return Outcome(Result.SKIPPED)
        if pushed is None and self.applied_plan is None and installed is not None:
            kept = self._keep_installed(result, installed, generation, changed_at)
            if kept is not None:
                return kept
        return self._install(result, installed, generation, changed_at, pushed)

    def _keep_installed(
        self, result: Build, installed: str, generation: str, changed_at: float
    ) -> Outcome | None:
        """First pass, dynamic mode: nginx serves the installed config, which differs from
        `result` only in the endpoints it was rendered with (watch/adopt.py). Keep it and
        push what nginx serves differently; None: install as usual."""
        plan, nginx = result.plan, self.spec.nginx
        theirs = config_generation(installed)
        if plan.feed is None or not result.verdict.ok or self.certs.pending or theirs is None:
            return None
        if not self._nginx_up() or serving_generation(nginx.status_listen) != theirs:
            return None
        if not same_but_endpoints(installed, result.text, plan):
            return None
        delta = self._served_delta(plan)
        pushed = self._push(plan, delta, "start") if delta else None
        if pushed is not None and not pushed.ok:
            return self._install(result, installed, generation, changed_at, pushed)
        if pushed is None:
            self._on_disk_as(plan)
        event(
            logging.INFO,
            f"kept: nginx serves {nginx.output} as installed (only endpoints moved since); "
            f"{len(delta)} service(s) pushed, no reload",
            generation=theirs,
        )
        split = self.splits.push_if_changed(self.spec, self.binary, plan)
        changed = bool(delta) or split
        self._succeeded(plan, theirs, changed_at, observe=changed)
        return Outcome(Result.APPLIED if changed else Result.UNCHANGED, pushed=pushed)

    def _install(
        self,
        result: Build,
        installed: str | None,
        generation: str,
        changed_at: float,
        pushed: Pushed | None,
    ) -> Outcome:
        text, plan = result.text, result.plan
        if not result.verdict.ok:
            self.metrics.validation_failures.inc()
            first = str(result.verdict.findings[0])
            event(
                logging.ERROR,
                "rendered config is invalid; not installed, nginx keeps the running one",
                findings=[str(f) for f in result.verdict.findings[:10]],
            )
            return self._failed(text, f"validation: {first}")

        reason = self._reason(plan)
        self.splits.before_install(self.spec, plan)
        if plan.feed is not None:
            # The endpoints this config must serve, at a generation above anything nginx
            # holds: the new workers' init prefers it to older pushes (and a restart of
            # nginx alone serves it too).
            try:
                gen = self.generations.next()
                self._persisted(self.snapshots.write(plan.feed.snapshot, gen, plan))
            except InstallError as exc:
                why = f"endpoint snapshot: {exc}"
                self.health.applied, self.health.apply_error = False, why
                event(logging.ERROR, f"apply failed: {why}; nginx keeps the running config")
                return Outcome(Result.FAILED, reason=reason, error=why, pushed=pushed)
        confirm = self.spec.watch.confirm_timeout
        self.health.in_flight = (generation, self.clock.monotonic() + confirm + IN_FLIGHT_MARGIN)
        try:
            return self._reload(text, generation, installed, plan, reason, changed_at, pushed)
        finally:
            # Only once the outcome is recorded (the generation that serves, or why not):
            # cleared any earlier, /healthz would see nginx ahead of the sidecar.
            self.health.in_flight = None

    def _reload(
        self,
        text: str,
        generation: str,
        installed: str | None,
        plan: Plan,
        reason: str,
        changed_at: float,
        pushed: Pushed | None,
    ) -> Outcome:
        """install → reload → confirm, and what comes of it recorded."""
        output = Path(self.spec.nginx.output)
        done = install(
            text,
            generation,
            self.spec.nginx,
            self.binary,
            installed=installed,
            confirm_timeout=self.spec.watch.confirm_timeout,
            clock=self.clock,
        )
        self._count(done, reason)
        if done.failed == "write":
            # Nothing changed on disk. Not remembered as failed text: once the disk has
            # room again (or the path is fixed) the same config goes in on the next pass.
            self.health.applied, self.health.apply_error = False, done.error
            event(logging.ERROR, f"apply failed: {done.error}; nginx keeps the running config")
            return Outcome(Result.FAILED, done, reason, done.error, pushed)
        if done.written and done.written.in_place and not self._said_in_place:
            self._said_in_place = True
            event(logging.WARNING, f"{output}: rename impossible (bind mount?); writing in place")
        self._nginx_running = done.running
        if not done.ok:
            return self._failed(text, done.error, done, reason, pushed)
        diff = diff_plans(self.applied_plan, plan)
        verb = "reloaded" if self._nginx_running else "installed"
        event(
            logging.INFO,
            f"{verb}: {diff.summary(why=REASON_WORDS[reason])}",
            reason=reason,
            generation=generation,
            upstreams=len(plan.upstreams),
            servers=plan.server_count,
            **diff.as_dict(),
        )
        for note in plan.notes:
            event(logging.INFO, f"note: {note}")
        self.splits.installed(plan)
        self._succeeded(plan, generation, changed_at, observe=True, old_workers=done.old_workers)
        # After the reload, off the change-to-served path: collect, then move the survivors
        # (plan, caches) out of the collector's sight (util/heap.py says why).
        self.heap.settle()
        return Outcome(Result.APPLIED, done, reason, pushed=pushed)

    # --- nginx.endpoints dynamic ---------------------------------------------------------

    def _pushes(self) -> bool:
        """Whether this pass may be a push: dynamic mode, a config of this run serving,
        and nothing that needs a reload anyway (a spec or certificate change)."""
        last = self.applied_plan
        return (
            not self.dry_run
            and last is not None
            and last.feed is not None
            and self._nginx_running
            and not self._spec_reloaded
            and not self.certs.pending
            and not self.templates.pending
        )

    def quiet_period(self) -> Debounce:
        """How long the loop lets a burst of registry events settle: a push waits much
        less than a reload (watch.push_debounce). Stream upstreams are static, so a
        spec with streams keeps the reload's quiet period."""
        if self.spec.nginx.dynamic and not self.spec.streams and self._pushes():
            return self.spec.watch.push_debounce
        return self.spec.watch.debounce

    def _nginx_up(self) -> bool:
        return find_master(self.spec.nginx.pid)[0] is not None

    def _served_delta(self, plan: Plan) -> dict[str, EndpointSet]:
        """What to push for nginx to serve `plan`'s endpoints: the difference from the
        config of this run that serves, or (first pass) from what nginx was last
        confirmed to serve, the boot snapshot (watch/adopt.py)."""
        if self.applied_plan is not None:
            return changed_endpoints(self.applied_plan, plan)
        nginx = self.spec.nginx
        held = feed_generation(nginx.status_listen, nginx.token_path)
        served = read_served(nginx.snapshot_path)
        self._trusted = held if served is not None and served.generation == held else None
        return served_delta(plan, served, held)

    def _on_disk_as(self, plan: Plan) -> None:
        """`plan` serves and no push was needed: what is on disk holds its endpoints
        already (the plan before, or at a first pass the snapshot the feed holds), so the
        next push appends a journal record instead of rewriting the snapshot."""
        if self.applied_plan is not None:
            self.snapshots.advance(self.applied_plan, plan)
        elif self._trusted is not None and plan.feed is not None:
            self.snapshots.adopt(plan.feed.snapshot, self._trusted, plan)

    def _push(
        self,
        plan: Plan,
        delta: dict[str, EndpointSet],
        reason: str,
        took: dict[str, float] | None = None,
    ) -> Pushed:
        """Push `delta`, confirm it, persist it (a journal record); log and count the result.
        `took`: seconds of the stages before the push (debounce, read, plan), for the log."""
        gen = self.generations.next()
        try:
            token = read_token(self.spec.nginx.token_path, "nginx.endpoints_token")
        except TokenFileError as exc:
            pushed = Pushed(False, gen, len(delta), 0, str(exc))
        else:
            client = FeedClient(self.spec.nginx.status_listen, token)
            pushed = push_endpoints(
                client,
                gen,
                delta,
                confirm_timeout=self.spec.watch.push_confirm_timeout,
                clock=self.clock,
            )
        self.metrics.pushes.labels(pushed.result).inc()
        names = sorted(delta)
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        if not pushed.ok:
            self.generations.observe(pushed.current)
            if pushed.status == 401:
                self.cache.feed_tokens.clear()  # the reload renders the current token's digest
            event(
                logging.WARNING,
                f"push of generation {gen} not applied: {pushed.error}; reloading instead",
                result=pushed.result,
                services=shown,
            )
            return pushed
        for i, _pid in enumerate(pushed.workers):
            self.metrics.feed_generation.labels(str(i)).set(gen)
        wrote = self.clock.monotonic()
        snapshot = plan.feed.snapshot if plan.feed else ""
        try:
            # A journal record of the delta (the snapshot itself only now and then).
            self._persisted(self.snapshots.record(snapshot, gen, plan, delta, self.applied_plan))
        except InstallError as exc:
            # Served already; the next push or reload writes the whole snapshot again.
            event(logging.ERROR, f"endpoint snapshot not written: {exc}")
        took = {**(took or {}), "snapshot": self.clock.monotonic() - wrote}
        # The same words as a reload's line (watch/diff.py), so a log reader sees one story.
        diff = diff_plans(self.applied_plan, plan)
        event(
            logging.INFO,
            f"pushed: {diff.summary()} ({REASON_WORDS.get(reason, reason)}; no reload)",
            reason=reason,
            generation=gen,
            services=shown,
            confirmed_in=f"{pushed.waited * 1000:.0f}ms",
            stages_ms=_stages_ms(took, pushed),
            **diff.as_dict(),
        )
        return pushed

    def _persisted(self, persisted: Persisted) -> None:
        """Say once that the snapshot's journal cannot be used (then every push rewrites
        the snapshot, as before the journal), and once that it can again."""
        if not persisted.full and persisted.note:
            event(logging.WARNING, persisted.note)  # a compaction failed; records go on
        if persisted.full and persisted.note != self._journal_note:
            if persisted.note:
                event(logging.WARNING, persisted.note)
            else:
                event(logging.INFO, "endpoint journal started again")
            self._journal_note = persisted.note

    def _planned(self, plan: Plan, pseudo_dead: int) -> None:
        self.last_plan = plan
        self.next_change = plan.next_change_at
        self.metrics.warming.set(warming_count(plan))
        self.metrics.pseudo_dead.set(pseudo_dead)

    def _guard(self, catalog: Catalog) -> Catalog:
        """The catalog to plan with: sudden removals held, flapping instances pinned."""
        guarded = self.hold.check(self.accepted, catalog, self.clock.monotonic())
        for reason in guarded.released:
            event(logging.WARNING, f"removal confirmed by consecutive reads: {reason}")
        if guarded.held:
            for reason in guarded.held.reasons:
                event(logging.WARNING, f"holding a sudden removal until confirmed: {reason}")
        self.health.held = "; ".join(guarded.held.reasons) if guarded.held else ""
        self.metrics.held.set(len(guarded.held.keys) if guarded.held else 0)
        self.accepted = guarded.catalog
        damped = self.flaps.apply(guarded.catalog, self.clock.monotonic())
        for line in damped.started:
            event(logging.WARNING, line)
        for line in damped.released:
            event(logging.INFO, line)
        self.health.flapping = ", ".join(damped.held)
        kept = (
            {k: "removal held until confirmed" for k in guarded.held.keys} if guarded.held else {}
        )
        hold = self.spec.watch.flap.hold
        kept.update({k: f"flapping: pinned until stable for {hold:g}s" for k in damped.keys})
        self.kept = kept
        self.metrics.flap_held.set(len(damped.held))
        self.metrics.set_catalog(damped.catalog)
        return damped.catalog

    def _count(self, done: Installed, reason: str) -> None:
        if done.reloaded:
            self.metrics.reloads.labels(reason).inc()
        if done.failed in ("reload", "confirm"):
            self.metrics.reload_failures.inc()
        if done.rolled_back:
            self.metrics.rollbacks.inc()

    def _reason(self, plan: Plan) -> str:
        """Why this config differs from the one serving (telemetry.RELOAD_REASONS)."""
        last = self.applied_plan
        if last is None:
            return "start"
        if self._spec_reloaded:
            return "spec"
        if self.certs.pending:
            return "certificate"
        if self.templates.pending:
            return "templates"
        if plan.catalog_fingerprint != last.catalog_fingerprint:
            return "registry"
        if self._observed_dead != self._applied_dead:
            return "probe"
        # Same spec, registry and probe verdicts: only the clock moved a ramp on.
        return "warmup" if last.next_change_at is not None else "registry"

    def templates_edited(self) -> bool:
        """A partial in templates_dir changed: read them again for the next build. Ones
        that do not compile are reported and the templates that serve are kept."""
        if not self.templates.changed():
            return False
        try:
            self.cache.reload_templates(self.spec.templates_dir, check=True)
        except TemplateError as exc:
            event(logging.ERROR, f"templates_dir: {exc}; keeping the templates that serve")
            self.templates.served()  # nothing to install until the next edit
            return False
        self.failed_text = None
        return True

    def not_served(self, generations: tuple[str, ...]) -> str | None:
        """For /healthz: None when nginx serves one of `generations` (the applied one,
        and one being installed), else why not. Cheap: one loopback request with a short
        timeout, or (no status listener) a look at the master's pid."""
        nginx = self.spec.nginx
        if self.dry_run:
            return None
        if nginx.status_listen != "off":
            seen = serving_generation(nginx.status_listen, timeout=HEALTH_PROBE_TIMEOUT)
            if seen in generations:
                return None
            if seen is None:
                return f"nginx does not answer on its status listener {nginx.status_listen}"
            return f"nginx serves generation {seen}, not {generations[0] or '-'}"
        pid, why = find_master(nginx.pid)
        return None if pid is not None else f"nginx is not running ({why})"

    def _serving(self, generation: str) -> bool:
        """Is the running nginx on this generation (or is there no way to tell)?"""
        listen = self.spec.nginx.status_listen
        if listen == "off" or self.applied_plan is not None:
            return True  # checked when we applied it
        seen = serving_generation(listen)
        return seen is None or seen == generation  # None: nginx not running; nothing to do

    def _succeeded(
        self,
        plan: Plan,
        generation: str,
        changed_at: float,
        *,
        observe: bool,
        old_workers: frozenset[Worker] = frozenset(),
    ) -> None:
        self.applied_plan = plan
        self.certs.served()
        self.templates.served()
        self._applied_dead = self._observed_dead
        self._spec_reloaded = False
        # First-seen times count from a config that serves; agents of the pseudo-dead
        # instances it keeps out may be asked to restart them once the workers from
        # before the reload, which still hold the old config, are gone.
        self.policies.installed(self._applied_dead, old_workers)
        self.failed_text = None
        self.health.applied, self.health.apply_error = True, ""
        previous = self.health.generation
        if previous and previous != generation:
            grace = self.clock.monotonic() + self.spec.watch.confirm_timeout
            self.health.superseded = (previous, grace)
        self.health.generation = generation
        self.metrics.last_sync.set(self.clock.wall().timestamp())
        if observe:
            self.metrics.latency.observe(self.clock.monotonic() - changed_at)

    def _failed(
        self,
        text: str,
        why: str,
        done: Installed | None = None,
        reason: str = "",
        pushed: Pushed | None = None,
    ) -> Outcome:
        self.failed_text = text
        self.health.applied, self.health.apply_error = False, why
        event(logging.ERROR, f"apply failed: {why}; retrying when something changes")
        return Outcome(Result.FAILED, done, reason, why, pushed)

    def _dry_run(
        self, installed: str | None, text: str, ok: bool, findings: tuple[object, ...]
    ) -> Outcome:
        show_text_diff(installed, text, str(self.spec.nginx.output))
        if not ok:
            for finding in findings:
                event(logging.ERROR, f"candidate is invalid: {finding}")
            return Outcome(Result.FAILED, error="validation")
        return Outcome(Result.UNCHANGED if installed == text else Result.APPLIED)


def _stages_ms(took: dict[str, float], pushed: Pushed) -> dict[str, float]:
    """Milliseconds per stage of a confirmed push: what came before it (debounce, read,
    plan), the request (nginx committed the push; the worker that took it serves it), and
    the wait until every worker reported the generation, then the boot snapshot written."""
    stages = {**took, "post": pushed.posted, "confirm": pushed.waited - pushed.posted}
    stages["snapshot"] = stages.pop("snapshot", 0.0)  # last, as it happens
    return {k: round(v * 1000, 1) for k, v in stages.items()}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
