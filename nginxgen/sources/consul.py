"""Consul: /v1/health/service/<name> per service, blocking queries to wait for changes.

State comes from the Checks Consul returns with each entry, judged here rather than by a
server-side `?passing` filter: a critical check means down, a maintenance check
(`_node_maintenance`, `_service_maintenance:<id>`) means draining, a warning check means
whatever `warning:` says (default up, weighted with Service.Weights.Warning).
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from typing import Any, TypeVar
from urllib.parse import quote

from ..model.catalog import Catalog
from ..model.validate import CatalogBuilder, shown
from ..registry.consul import ConsulClient
from ..registry.shift import SPLIT_DIR
from ..spec import ConsulRegistry
from .base import RegistryError
from .states import meta_overrides, worst

T = TypeVar("T")

CATALOG = ""  # key of the service list's own index in the version
KV = "\0kv"  # key of the split overrides' index (no service name holds a NUL)


def reconcile(previous: int, new: int | None) -> int:
    """Consul's rules for X-Consul-Index: reset to 0 when it went backwards (a snapshot
    restore, an upgrade), or is missing or invalid; otherwise take it. Blocking queries
    then use at least 1, so a zero index can never turn into a busy loop."""
    if new is None or new <= 0 or new < previous:
        return 0
    return new


def check_state(checks: Any, warning: str) -> tuple[str, bool]:
    """(state, any warning check) from an entry's Checks. Raises ValueError when malformed."""
    if checks is None:
        return "up", False
    if not isinstance(checks, list):
        raise ValueError("Checks must be a list")
    critical = maintenance = warned = False
    for check in checks:
        if not isinstance(check, dict):
            raise ValueError("a check is not an object")
        check_id, status = check.get("CheckID"), check.get("Status")
        if isinstance(check_id, str) and (
            check_id == "_node_maintenance" or check_id.startswith("_service_maintenance:")
        ):
            maintenance = True  # reported as critical; it is a deliberate drain, not a fault
        elif status == "critical":
            critical = True
        elif status == "warning":
            warned = True
        elif status != "passing":
            raise ValueError(f"check {shown(check_id)} has unknown status {shown(status)}")
    if critical:
        return "down", warned
    if maintenance:
        return "draining", warned
    if warned:
        return warning, True
    return "up", False


def add_entries(builder: CatalogBuilder, name: str, entries: list[Any], warning: str) -> None:
    if builder.service(name) is None:
        return
    ids = Counter(
        e["Service"].get("ID")
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("Service"), dict)
        and isinstance(e["Service"].get("ID"), str)
    )
    repeated = {i for i, n in ids.items() if n > 1}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Service"), dict):
            builder.drop(name, f"#{n}", "entry has no Service object")
            continue
        svc = entry["Service"]
        node: dict[str, Any] = entry["Node"] if isinstance(entry.get("Node"), dict) else {}
        sid = svc.get("ID") or svc.get("Service")
        # Service IDs are unique per agent only; the same ID on two nodes gets the node name.
        twice = isinstance(sid, str) and sid in repeated
        inst_id = f"{node.get('Node')}/{sid}" if twice and node.get("Node") else sid
        try:
            state, warned = check_state(entry.get("Checks"), warning)
        except ValueError as exc:
            builder.drop(name, inst_id, str(exc))
            continue
        meta = svc.get("Meta") or None
        over = meta_overrides(meta)
        weights: dict[str, Any] = svc["Weights"] if isinstance(svc.get("Weights"), dict) else {}
        weight = over.get("weight", weights.get("Warning" if warned else "Passing"))
        builder.add(
            name,
            id=inst_id,
            host=svc.get("Address") or node.get("Address"),
            port=svc.get("Port"),
            weight=weight,
            state=worst(state, over.get("state")),
            registered_at=over.get("registered_at"),
            tags=svc.get("Tags"),
            meta=meta,
        )


class Pace:
    """Token bucket per query key (burst 2), as Consul's docs advise for blocking loops:
    a couple of quick successive deliveries pass at once, while a churning or broken
    index degrades to one query per `interval` instead of a busy loop."""

    def __init__(self, interval: float, burst: float = 2.0) -> None:
        self.interval = interval
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def delay(self, key: str) -> float:
        """Take a token for key; returns how long to wait before querying."""
        if self.interval <= 0:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) / self.interval)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        wait = (1 - tokens) * self.interval
        self._buckets[key] = (0.0, now + wait)  # the token that arrives then is spent
        return wait


class ConsulSource:
    def __init__(self, config: ConsulRegistry, services: Sequence[str] = ()) -> None:
        self.config = config
        self.client = ConsulClient(config)
        # One blocking query in flight per key, reused across wait() calls.
        self._pending: dict[str, tuple[int, Future[int]]] = {}
        self._pace = Pace(config.min_interval)
        self._kv_prefix = config.kv_prefix + SPLIT_DIR

    def _path(self, key: str) -> str:
        if key == CATALOG:
            return "/v1/catalog/services"
        return f"/v1/health/service/{quote(key, safe='')}"

    def _get(
        self, key: str, extra: dict[str, str] | None = None, read_timeout: float | None = None
    ) -> tuple[Any, int]:
        params: dict[str, str] = {}
        if key == KV:
            data, index = self.client.kv_read(self._kv_prefix, extra or {}, read_timeout)
            return data, reconcile(0, index)
        if key != CATALOG and self.config.tag:
            params["tag"] = self.config.tag
        params.update(extra or {})
        data, index = self.client.read(self._path(key), params, read_timeout)
        return data, reconcile(0, index)

    def _names(self) -> tuple[list[str], int | None]:
        if self.config.services is not None:
            return list(self.config.services), None
        data, index = self._get(CATALOG)
        if not isinstance(data, dict):
            raise self.client.http.fail(self.config.url + self._path(CATALOG), "expected an object")
        tag = self.config.tag
        names = [n for n, tags in data.items() if tag is None or tag in (tags or [])]
        return sorted(names), index

    def read(self) -> Catalog:
        names, catalog_index = self._names()
        builder = CatalogBuilder(f"consul:{self.config.url}")
        indexes: dict[str, int] = {}
        if catalog_index is not None:
            indexes[CATALOG] = catalog_index
        for name in names:
            entries, indexes[name] = self._get(name)
            if not isinstance(entries, list):
                raise self.client.http.fail(
                    self.config.url + self._path(name), "expected a list of service entries"
                )
            add_entries(builder, name, entries, self.config.warning)
        kv, kv_index = self.client.kv_read(self._kv_prefix, {})
        if kv_index is not None:  # Consul always sends one; without it, nothing to block on
            indexes[KV] = reconcile(0, kv_index)
        add_overrides(builder, self._kv_prefix, kv)
        return builder.build(dumps(indexes))

    def _block(self, key: str, index: int, wait: float) -> int:
        """One blocking query; returns the reconciled new index."""
        pause = self._pace.delay(key)
        if pause > 0:  # never hammer Consul, even if it answers at once every time
            time.sleep(pause)
        seconds = min(600, max(1, math.ceil(wait)))
        # Consul adds up to wait/16 of jitter before answering.
        read_timeout = seconds + seconds / 16 + self.config.read_timeout
        extra = {"index": str(max(index, 1)), "wait": f"{seconds}s"}
        _, new = self._get(key, extra, read_timeout)
        return reconcile(index, new)

    def wait(self, version: str, timeout: float) -> bool:
        try:
            indexes = json.loads(version)
        except ValueError:
            return True
        if not isinstance(indexes, dict) or not indexes:
            return True
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            futures: dict[Future[int], str] = {}
            for key, index in indexes.items():
                pending = self._pending.get(key)
                if pending is None or pending[0] != index:
                    pending = (index, in_thread(self._block, key, index, remaining))
                    self._pending[key] = pending
                futures[pending[1]] = key
            done, _ = wait_futures(futures, timeout=remaining, return_when=FIRST_COMPLETED)
            if not done:
                return False
            for fut in done:
                key = futures[fut]
                self._pending.pop(key, None)
                try:
                    new = fut.result()
                except RegistryError:
                    raise
                if new != indexes[key]:
                    return True

    def close(self) -> None:
        self._pending.clear()
        self.client.close()


def add_overrides(builder: CatalogBuilder, prefix: str, entries: list[Any]) -> None:
    """Split overrides (`nginxgen shift`) from the KV entries under `prefix`."""
    for entry in entries:
        key = entry.get("Key") if isinstance(entry, dict) else None
        if not isinstance(key, str) or not key.startswith(prefix):
            continue
        service = key[len(prefix) :]
        try:
            text = base64.b64decode(entry.get("Value") or "").decode("utf-8")
        except (TypeError, ValueError):
            builder.drop(service, "split", "split override is not valid base64 UTF-8")
            continue
        if service and "/" not in service:
            builder.split(service, text)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def in_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run fn in a daemon thread. Unlike a ThreadPoolExecutor, a blocking query still in
    flight never holds up interpreter exit."""
    fut: Future[T] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits on the future
            fut.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="nginxgen-registry").start()
    return fut
