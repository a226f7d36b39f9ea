"""What the sidecar tells the world: log lines, Prometheus metrics, and /healthz."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ..model.catalog import Catalog, Instance, changed_since
from ..util.clock import Clock
from .recovery import RESULTS as RECOVERY_RESULTS

log = logging.getLogger("nginxgen.watch")

# --- logs -------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}) or {})
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS level message key=value ...` for terminals and plain log files."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", {}) or {}
        extra = "".join(f" {k}={_short(v)}" for k, v in fields.items())
        return f"{stamp} {record.levelname.lower():7} {record.getMessage()}{extra}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:197] + "..."


def setup_logging(fmt: str, level: int = logging.INFO) -> None:
    """Logs go to stderr: text (rich on a terminal) or JSON lines."""
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(_RichFields())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter())
    # On the package's logger, so the prober's and the state file's lines come out alike.
    root = logging.getLogger("nginxgen")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _RichFields(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {}) or {}
        return record.getMessage() + "".join(f" {k}={_short(v)}" for k, v in fields.items())


def event(level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})


# --- metrics ----------------------------------------------------------------------------

# Why a reload happened, first match wins: the first config of this process; a reloaded
# spec (SIGHUP); a different catalog; a different pseudo-dead set; a warm-up step (the clock).
PUSH_RESULTS = ("confirmed", "refused", "unconfirmed", "unreachable")
RELOAD_REASONS = ("start", "spec", "registry", "probe", "warmup", "certificate", "templates")

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The sidecar's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reads = Counter("nginxgen_registry_reads", "Successful registry reads.", registry=r)
        self.read_errors = Counter(
            "nginxgen_registry_errors", "Failed registry reads and waits.", registry=r
        )
        self.renders = Counter("nginxgen_renders", "Configs rendered.", registry=r)
        self.validation_failures = Counter(
            "nginxgen_validation_failures",
            "Rendered configs refused by crossplane, round-trip or nginx -t.",
            registry=r,
        )
        self.reloads = Counter(
            "nginxgen_reloads",
            "Reloads of nginx onto a new config, by what caused them (see RELOAD_REASONS).",
            ["reason"],
            registry=r,
        )
        for reason in RELOAD_REASONS:
            self.reloads.labels(reason)  # every reason shows, at 0, from the start
        self.reload_failures = Counter(
            "nginxgen_reload_failures",
            "Reloads that failed or did not serve the new config in time.",
            registry=r,
        )
        self.rollbacks = Counter(
            "nginxgen_rollbacks", "Previous configs restored after a failed reload.", registry=r
        )
        self.split_pushes = Counter(
            "nginxgen_split_pushes",
            "Split weights pushed to nginx without a reload (services.NAME.split).",
            registry=r,
        )
        self.split_rollbacks = Counter(
            "nginxgen_split_guard_rollbacks",
            "Canaries the split guard shifted back to 0, by service and version.",
            ["service", "version"],
            registry=r,
        )
        self.instances = Gauge(
            "nginxgen_service_instances",
            "Instances per service in the effective catalog.",
            ["service"],
            registry=r,
        )
        self.held = Gauge(
            "nginxgen_removals_held",
            "Instances kept although the registry dropped them (awaiting confirmation).",
            registry=r,
        )
        self.last_sync = Gauge(
            "nginxgen_last_sync_timestamp_seconds",
            "When the running config last matched the registry (Unix time).",
            registry=r,
        )
        self.stale = Gauge(
            "nginxgen_registry_stale", "1 while serving the last good catalog.", registry=r
        )
        self.warming = Gauge(
            "nginxgen_instances_warming_up",
            "Instances on a warm-up ramp in the last planned config.",
            registry=r,
        )
        self.flap_held = Gauge(
            "nginxgen_instances_flap_held",
            "Instances pinned by flap damping until they are stable (watch.flap).",
            registry=r,
        )
        self.pseudo_dead = Gauge(
            "nginxgen_instances_pseudo_dead",
            "Instances failing their health probes (kept out unless their whole service fails).",
            registry=r,
        )
        self.recoveries = Counter(
            "nginxgen_recoveries",
            "Recovery actions for pseudo-dead instances, by outcome (see recovery.RESULTS).",
            ["result"],
            registry=r,
        )
        for result in RECOVERY_RESULTS:
            self.recoveries.labels(result)
        self.pushes = Counter(
            "nginxgen_pushes",
            "Endpoint pushes to nginx's feed (nginx.endpoints dynamic), by result: confirmed, "
            "refused (nginx said no), unconfirmed (a worker did not serve it in time), "
            "unreachable; every result but confirmed is followed by a reload.",
            ["result"],
            registry=r,
        )
        for result in PUSH_RESULTS:
            self.pushes.labels(result)
        self.feed_generation = Gauge(
            "nginxgen_endpoints_generation",
            "The endpoint generation each nginx worker serves, as last confirmed.",
            ["worker"],
            registry=r,
        )
        self.latency = Histogram(
            "nginxgen_change_to_served_seconds",
            "From noticing a registry change to nginx serving the new config.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Per instance (watch/instances.py): a collector of its own, since 10,000
        # instances as prometheus_client children cost seconds to set and to expose.
        self.per_instance = InstanceGauges()
        self._services: Mapping[str, tuple[Instance, ...]] = {}  # as the last set_catalog

    def set_instances(self, service: str, rows: tuple[Any, ...]) -> None:
        """The gauges of one service's instances (watch/instances.Row); () removes them."""
        self.per_instance.set(service, rows)

    def set_catalog(self, catalog: Catalog) -> None:
        """nginxgen_service_instances per service. A service whose instances are the very
        tuple of the last call (sources keep an unchanged service's object) is skipped."""
        current, last = catalog.services, self._services
        names = changed_since(current, last)
        if names is None:
            for name in last.keys() - current.keys():
                self.instances.remove(name)
            looked: Iterable[str] = current
        else:  # the map knows what changed since the last call (model/catalog.py)
            for name in names:
                if name not in current and name in last:
                    self.instances.remove(name)
            looked = [n for n in names if n in current]  # (a set op with keys() copies them)
        for name in looked:
            insts, was = current[name], last.get(name)
            if was is not insts and (was is None or len(was) != len(insts)):
                self.instances.labels(name).set(len(insts))
        self._services = current  # a catalog's services are never changed once made

    def exposition(self) -> bytes:
        return generate_latest(self.registry) + self.per_instance.text()


class InstanceGauges(Collector):
    """nginxgen_instance_{state,weight,warmup_percent}, one series per instance each,
    labelled like nginx's per-peer counters (service, peer) so that the dashboard can put
    them side by side; `id` is the registry's instance id (not `instance`: Prometheus
    sets that label itself). A service's rows are replaced whole; an instance that
    leaves takes its series along."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._version = 0
        self._lock = threading.Lock()  # the rows; held briefly, the loop sets them
        self._render = threading.Lock()  # one exposition made at a time, off `_lock`
        self._text: tuple[int, bytes] | None = None  # the exposition of a version
        self._snapshot: dict[str, tuple[Any, ...]] = {}
        self._registry = CollectorRegistry()
        self._registry.register(self)

    def set(self, service: str, rows: tuple[Any, ...]) -> None:
        with self._lock:
            if rows:
                self._rows[service] = rows
            else:
                self._rows.pop(service, None)
            self._version += 1

    def text(self) -> bytes:
        """The three families in the text format; made again only after a change, so a
        scrape between two applies costs nothing (formatting costs ~30 µs a series), and
        made without holding up the loop."""
        with self._render:
            with self._lock:
                version, cached = self._version, self._text
                if cached is not None and cached[0] == version:
                    return cached[1]
                self._snapshot = dict(self._rows)
            text = generate_latest(self._registry)
            self._text = (version, text)
            return text

    def describe(self) -> list[Metric]:
        return list(self._families({}))

    def collect(self) -> list[Metric]:
        return list(self._families(self._snapshot))

    @staticmethod
    def _families(rows: dict[str, tuple[Any, ...]]) -> tuple[GaugeMetricFamily, ...]:
        labels = ["service", "id", "peer"]
        state = GaugeMetricFamily(
            "nginxgen_instance_state",
            "1 for each instance, labelled with its state (serving, warming, draining, "
            "pseudo_dead, passive_failed, out).",
            labels=[*labels, "state"],
        )
        weight = GaugeMetricFamily(
            "nginxgen_instance_weight",
            "Each instance's nginx weight: planned (the last plan) and in_force (what nginx "
            "balances with now).",
            labels=[*labels, "kind"],
        )
        warmup = GaugeMetricFamily(
            "nginxgen_instance_warmup_percent",
            "Share of its weight an instance gets: 100 when warm, the ramp's step while "
            "warming, 0 when out.",
            labels=labels,
        )
        for service, items in rows.items():
            seen = set()
            for row in items:
                key = (service, row.id, row.address)
                if key in seen:
                    continue  # the same id and address twice in a registry: one series
                seen.add(key)
                state.add_metric([*key, row.state], 1)
                weight.add_metric([*key, "planned"], row.planned_weight)
                if row.weight is not None:
                    weight.add_metric([*key, "in_force"], row.weight)
                warm = row.state in ("serving", "warming", "passive_failed")
                percent = (100 if row.percent is None else row.percent) if warm else 0
                warmup.add_metric(list(key), percent)
        return state, weight, warmup


# --- health -----------------------------------------------------------------------------


@dataclass
class Health:
    """The answer /healthz gives; written by the loop, read by the HTTP thread."""

    applied: bool | None = None  # None: nothing applied yet
    apply_error: str = ""
    stale_since: float | None = None  # wall time (Unix seconds)
    stale_reason: str = ""
    generation: str = ""
    held: str = ""
    flapping: str = ""
    # Asked on every /healthz once a config is applied: None when nginx serves one of
    # these generations, else why not (nginx stopped, or reloaded onto something else).
    served: Callable[[tuple[str, ...]], str | None] | None = None
    # While a config is being installed: its generation and the monotonic deadline of its
    # confirmation. nginx may serve it before the sidecar has confirmed it; that is the
    # reload working, not a fault, so readiness does not flap at every reload.
    in_flight: tuple[str, float] | None = None
    # After a reload, nginx's old workers finish what they hold and may still answer the
    # status listener for a moment: the generation before it, and until when it counts.
    superseded: tuple[str, float] | None = None
    clock: Clock = field(default_factory=Clock)

    def status(self, now: float | None = None) -> tuple[int, str]:
        now = self.clock.wall().timestamp() if now is None else now
        if self.stale_since is not None:
            ago = now - self.stale_since
            return 503, f"registry stale for {ago:.0f}s, serving the last good catalog: " + (
                self.stale_reason
            )
        if self.applied is None:
            return 503, "no config applied yet"
        if not self.applied:
            return 503, f"last apply failed: {self.apply_error}"
        accepted: tuple[str, ...] = (self.generation,)
        note = ""
        now_m = self.clock.monotonic()
        pending, before = self.in_flight, self.superseded
        if pending is not None and now_m <= pending[1]:
            accepted += (pending[0],)
            note = f"; reloading onto {pending[0]}"
        if before is not None and now_m <= before[1]:
            accepted += (before[0],)
        problem = self.served(accepted) if self.served else None
        if problem:
            return 503, f"generation {self.generation or '-'} is not served: {problem}"
        note += f"; holding: {self.held}" if self.held else ""
        note += f"; flapping, pinned: {self.flapping}" if self.flapping else ""
        return 200, f"ok: generation {self.generation or '-'}{note}"


class StatusServer:
    """/healthz, /metrics and /status on a loopback port, served from a daemon thread.
    `document` makes the /status answer (watch/instances.py); until it is set, 404."""

    def __init__(self, listen: str, health: Health, metrics: Metrics) -> None:
        host, _, port = listen.rpartition(":")
        this = self
        self.health, self.metrics = health, metrics
        self.document: Callable[[], dict[str, Any]] | None = None

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.split("?")[0] == "/healthz":
                    code, text = this.health.status()
                    body, ctype = (text + "\n").encode(), "text/plain; charset=utf-8"
                elif self.path.split("?")[0] == "/metrics":
                    code, body, ctype = 200, this.metrics.exposition(), CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/status" and this.document is not None:
                    doc = json.dumps(this.document(), separators=(",", ":"))
                    code, body, ctype = 200, doc.encode(), "application/json"
                else:
                    code, body = 404, b"try /healthz, /metrics or /status\n"
                    ctype = "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, int(port)), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StatusServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
