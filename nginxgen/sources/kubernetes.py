"""Kubernetes: a Service's instances are the endpoints of its EndpointSlices, kept current
by list + watch, as client-go's informers keep theirs.

One LIST (a consistent read, page by page) fills a store of slices; one WATCH from the
list's resourceVersion, with bookmarks, keeps the store in step; `read()` builds the
catalog from the store, so reads cost the API server nothing once listed. When the watch
expires (410 Gone, as an HTTP status or an ERROR event) the slices are listed again and
the new list replaces the store in one step: nothing is emptied in between, and what is
served changes only where the list differs. A bookmark only moves the resourceVersion.
While the API server cannot be reached, `read()` and `wait()` raise RegistryError (the
watcher keeps its last good catalog and says the data is stale) and the watch is
re-opened with capped, jittered backoff, from the last resourceVersion it saw.

How endpoints map to instances: endpointslices.py.

What this does not give: weights (every endpoint weighs 1; a weight per Service would be
the same for all its endpoints, so nothing to balance by) and start times (slices carry
none): warm-up starts when nginxgen first sees an endpoint serving, which is when its
readiness passed, not when its pod was created.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests

from ..model.catalog import Catalog
from ..model.validate import CatalogBuilder
from ..registry.errors import RegistryConfigError, describe
from ..registry.http import interrupt
from ..registry.kubernetes import SERVICE_NAME_LABEL, Expired, KubernetesClient
from ..spec import KubernetesRegistry
from ..spec.registries import is_service_name
from ..util.backoff import Backoff
from .base import RegistryError
from .endpointslices import add_slices

log = logging.getLogger("nginxgen.kubernetes")

# Re-connect pace: from 0.2 s up to 10 s between attempts, jittered (util/backoff.py).
RETRY_INITIAL, RETRY_MAX = 0.2, 10.0
# A watch that ends normally after at least this long is re-opened at once.
SHORTEST_WATCH = 1.0


def label_selector(config: KubernetesRegistry, services: Sequence[str]) -> str:
    """The labelSelector for the slices to watch."""
    if config.selector is not None:
        return f"{SERVICE_NAME_LABEL},{config.selector}"
    names = config.services if config.services is not None else tuple(services)
    return f"{SERVICE_NAME_LABEL} in ({','.join(sorted(set(names)))})"


def _projection(obj: Any) -> Any:
    """What of a slice the catalog depends on: a change elsewhere (resourceVersion,
    managedFields, annotations) changes nothing served."""
    if not isinstance(obj, dict):
        return obj
    meta = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    labels = meta["labels"] if isinstance(meta.get("labels"), dict) else {}
    return (
        meta.get("name"),
        labels.get(SERVICE_NAME_LABEL),
        obj.get("addressType"),
        obj.get("endpoints"),
        obj.get("ports"),
    )


def _slice_name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError("object has no metadata.name")
    return name


# --- the source --------------------------------------------------------------------------


class KubernetesSource:
    def __init__(
        self,
        config: KubernetesRegistry,
        services: Sequence[str] = (),
        *,
        client: KubernetesClient | None = None,
    ) -> None:
        self.config = config
        if config.services is None and config.selector is None:
            bad = [s for s in services if not is_service_name(s)]
            if bad:
                raise RegistryConfigError(
                    f"kubernetes: route service {bad[0]!r} is not a Kubernetes Service name "
                    "(lower-case letters, digits and '-'); route to the Service's own name, "
                    "or choose the Services with registry.selector"
                )
        self.client = client or KubernetesClient(config)
        self.selector = label_selector(config, services)
        # Services that exist even with no slices (a route to one answers 503).
        self.declared: tuple[str, ...] = ()
        if config.selector is None:
            self.declared = tuple(config.services if config.services is not None else services)
        self._nonce = os.urandom(4).hex()  # a version from another source means "re-read"
        # The store and the watch state, shared with the watcher thread under _cond.
        self._cond = threading.Condition()
        self._store: dict[str, Any] | None = None  # slice name → EndpointSlice
        self._rv = ""  # resourceVersion to watch from
        self._generation = 0  # bumped whenever what the catalog depends on changes
        self._relist = False  # the watch expired: list before watching again
        self._error: str | None = None  # why the API server cannot be followed, while so
        self._progress = 0  # watch events and bookmarks seen
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stream: requests.Response | None = None
        self.backoff = Backoff(RETRY_INITIAL, RETRY_MAX)
        # How often each thing happened (for tests and debugging).
        self.lists = self.expirations = self.reconnects = self.bookmarks = 0

    @property
    def where(self) -> str:
        return f"kubernetes:{self.client.target.api}/namespaces/{self.client.target.namespace}"

    # --- read -----------------------------------------------------------------------------

    def read(self) -> Catalog:
        with self._cond:
            listed, error = self._store is not None, self._error
        if not listed:
            self._list()
        elif error:
            raise RegistryError(error)
        with self._cond:
            generation = self._generation
            slices = list((self._store or {}).values())
        builder = CatalogBuilder(self.where)
        for name in self.declared:
            builder.service(name)
        add_slices(builder, slices, self.config)
        return builder.build(f"{self._nonce}:{generation}")

    def _list(self) -> None:
        items, version = self.client.list(self.selector)
        store: dict[str, Any] = {}
        for n, obj in enumerate(items):
            try:
                store[_slice_name(obj)] = obj
            except ValueError:
                store[f"#{n}"] = obj  # add_slices names and drops what is wrong with it
        with self._cond:
            old = self._store
            self.lists += 1
            self._store, self._rv, self._relist, self._error = store, version, False, None
            if old is None or _changed(old, store):
                self._generation += 1
                self._cond.notify_all()
        if old is not None:
            log.info(
                "listed %d EndpointSlices again at resourceVersion %s (%s)",
                len(store),
                version,
                ", ".join(f"{len(v)} {k}" for k, v in _diff(old, store).items()) or "no change",
            )

    # --- wait -----------------------------------------------------------------------------

    def wait(self, version: str, timeout: float) -> bool:
        nonce, _, generation = version.partition(":")
        if nonce != self._nonce or not generation.isdigit():
            return True
        target = int(generation)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._watch_loop, daemon=True, name="nginxgen-kubernetes-watch"
                )
                self._thread.start()
            self._cond.wait_for(
                lambda: self._generation > target or self._error is not None, timeout
            )
            if self._generation > target:
                return True
            if self._error is not None:
                raise RegistryError(self._error)
            return False

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            progress, started = self._progress, time.monotonic()
            try:
                with self._cond:
                    must_list = self._store is None or self._relist
                if must_list:
                    self._list()
                self._watch_once()
                if self._progress != progress or time.monotonic() - started >= SHORTEST_WATCH:
                    self.backoff.reset()
                    continue  # the server ended the watch, or it went quiet: the next one
            except Expired as exc:
                self.expirations += 1
                with self._cond:
                    self._relist = True
                log.info("%s; listing the EndpointSlices again", exc)
                if self._progress != progress:
                    continue  # a watch that worked expired: list again at once
            except RegistryError as exc:
                with self._cond:
                    self._error = f"{exc} (watch; retrying)"
                    self._cond.notify_all()
            except Exception as exc:  # close() from another thread breaks a read oddly
                if self._stop.is_set():
                    return
                with self._cond:
                    self._error = str(self.client.fail(f"watch failed: {type(exc).__name__}"))
                    self._cond.notify_all()
            self.reconnects += 1
            self._stop.wait(self.backoff.next())

    def _watch_once(self) -> None:
        with self._cond:
            version = self._rv
        r, idle = self.client.watch(self.selector, version)
        self._stream = r
        if self._stop.is_set():  # close() ran while the watch was being opened
            r.close()
            return
        with self._cond:
            if self._error is not None:
                log.info("%s: reachable again; watching from %s", self.client.url, version)
            self._error = None
        last = time.monotonic()
        try:
            for kind, obj in self.client.events(r):
                if self._stop.is_set():
                    return
                last = time.monotonic()
                self._apply(kind, obj)
        except RegistryError:
            raise
        except Exception as exc:
            if self._stop.is_set() or time.monotonic() - last >= idle * 0.9:
                return  # closed, or silent for too long: open the next watch
            if isinstance(exc, requests.RequestException):
                raise self.client.fail(describe(exc, idle)) from None
            raise self.client.fail(f"watch stream broke: {type(exc).__name__}") from None
        finally:
            r.close()
            self._stream = None

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if not isinstance(version, str) or not version:
            raise self.client.fail(f"watch sent a {kind} event without metadata.resourceVersion")
        if kind == "BOOKMARK":  # progress only: nothing about the slices changed
            with self._cond:
                self._rv = version
                self._progress += 1
                self.bookmarks += 1
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise self.client.fail(f"watch sent an event of unknown type {kind[:40]!r}")
        try:
            name = _slice_name(obj)
        except ValueError:
            raise self.client.fail(f"watch sent a {kind} event without metadata.name") from None
        with self._cond:
            store = self._store if self._store is not None else {}
            self._store = store
            old = store.pop(name, None)
            if kind != "DELETED":
                store[name] = obj
            self._rv = version
            self._progress += 1
            if _projection(old) != _projection(store.get(name)):
                self._generation += 1
                self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            interrupt(stream)
        with self._cond:
            self._cond.notify_all()
        self.client.close()


def _changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return old.keys() != new.keys() or any(_projection(old[k]) != _projection(new[k]) for k in new)


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    """Slice names added, changed and removed between two stores (for the log)."""
    out = {
        "added": sorted(new.keys() - old.keys()),
        "changed": sorted(
            k for k in new.keys() & old.keys() if _projection(old[k]) != _projection(new[k])
        ),
        "removed": sorted(old.keys() - new.keys()),
    }
    return {k: v for k, v in out.items() if v}
