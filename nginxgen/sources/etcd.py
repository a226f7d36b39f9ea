"""etcd v3 through its JSON gateway (/v3/kv/range, /v3/watch), no gRPC dependency.

Layout: `<prefix><service>/<instance-id>` → a JSON object
    {"address": "10.0.0.5:8080"} or {"host": "10.0.0.5", "port": 8080},
    plus optional weight, state, registered_at, tags, meta.
Instances write their key with a lease and keep it alive; when the heartbeat stops etcd
deletes the key and the instance leaves the catalog. That is the failure detection.

Changes: one watch stream over the prefix, kept open by a background thread. It resumes
from the last revision it saw after a disconnect (trying the next endpoint), and after a
compaction it reports a change so the caller does a full re-read.

Reads are incremental while the stream follows etcd without a gap: a read after the
stream delivered events applies them to the keys it holds and validates again only the
services they touch; any other read (the first, a resync with nothing delivered, after a
compaction, a history reset or while the stream is down) is a full range. Every other
service keeps its very tuple of instances, so the sidecar's later stages skip it by
identity: one change among 10,000 services costs one service here, not a 100,000-key
range.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import requests

from ..model.catalog import Catalog, Dropped, Instance, ServiceMap, derive
from ..model.validate import CatalogBuilder, safe_name
from ..registry.errors import describe, printable
from ..registry.etcd import EtcdClient, prefix_end
from ..registry.http import interrupt
from ..registry.shift import ETCD_DIR
from ..spec import EtcdRegistry
from .base import RegistryError

FIELDS = (
    "address",
    "host",
    "port",
    "weight",
    "state",
    "registered_at",
    "tags",
    "meta",
    "id",
    "version",
)
# A silent stream is re-opened after this long, so a half-open TCP connection is noticed.
STREAM_IDLE = 60.0


class _Reopen(Exception):
    """The stream must be re-opened from _resume; not an outage."""


def add_kv(builder: CatalogBuilder, prefix: str, kv: Any) -> None:
    """One key-value from the range answer → one instance (or a drop with the key named)."""
    try:
        key = base64.b64decode(kv["key"]).decode("utf-8")
    except (KeyError, TypeError, ValueError):
        builder.drop("?", "?", "key is not valid base64 UTF-8")
        return
    rest = key[len(prefix) :]
    if rest.startswith(ETCD_DIR):
        add_split(builder, rest[len(ETCD_DIR) :], kv)
        return
    service, sep, instance = rest.partition("/")
    if not sep or not service or not instance or "/" in instance:
        builder.drop(service or "?", key, f"key must look like {prefix}<service>/<instance-id>")
        return
    try:
        value = json.loads(base64.b64decode(kv.get("value", "")) or b"null")
    except (TypeError, ValueError, RecursionError):  # not base64, not JSON, nested too deep
        builder.drop(service, instance, "value is not valid JSON")
        return
    if not isinstance(value, dict):
        builder.drop(service, instance, "value must be a JSON object")
        return
    unknown = sorted(set(map(str, value)) - set(FIELDS))
    if unknown:
        builder.drop(service, instance, f"unknown field(s): {', '.join(unknown)}")
        return
    fields = {k: v for k, v in value.items() if k != "id"}
    if "version" in fields:
        # The value field `version` is the release it runs (docs/split.md): kept as
        # meta.version unless meta names one itself.
        version, meta = fields.pop("version"), fields.get("meta")
        if meta is None:
            fields["meta"] = {"version": version}
        elif isinstance(meta, dict):
            fields["meta"] = {"version": version, **meta}
    builder.add(service, id=instance, **fields)


def add_split(builder: CatalogBuilder, service: str, kv: Any) -> None:
    """A split override (`nginxgen shift`): kept as text, checked against the spec at plan."""
    try:
        text = base64.b64decode(kv.get("value", "")).decode("utf-8")
    except (TypeError, ValueError):
        builder.drop(service, "split", "split override is not valid base64 UTF-8")
        return
    if service and "/" not in service:
        builder.split(service, text)


SPLITS = "\0split"  # the group of split override keys
BAD_KEYS = "\0bad"  # the group of keys that name no service
# Events kept for the next read at most; beyond this (nobody reads), the next is a full read.
MAX_PENDING = 200_000


def key_group(prefix: str, key_b64: Any) -> str:
    """Which part of the catalog a key feeds: its service's nginx-safe name (two raw names
    with one safe name are validated together, as in a full read), the split overrides,
    or the keys that name no service."""
    try:
        key = base64.b64decode(key_b64).decode("utf-8")
    except (TypeError, ValueError):
        return BAD_KEYS
    rest = key[len(prefix) :]
    if rest.startswith(ETCD_DIR):
        return SPLITS
    service, sep, instance = rest.partition("/")
    if not sep or not service or not instance or "/" in instance:
        return BAD_KEYS
    return safe_name(service)


@dataclass(frozen=True)
class _Part:
    """What one group of keys contributes to the catalog."""

    services: dict[str, tuple[Instance, ...]]
    dropped: tuple[Dropped, ...]
    splits: dict[str, str]
    notes: tuple[str, ...] = ()


class _Store:
    """The keys under the prefix as of `revision`, grouped, with each group's part and
    the catalog put together from them. Touched only by `read` (the caller's thread)."""

    def __init__(self, prefix: str, revision: int) -> None:
        self.prefix = prefix
        self.base = revision  # of the range it was built from: events must follow it
        self.revision = revision  # of the last event applied
        self.groups: dict[str, dict[str, Any]] = {}  # group -> key (base64) -> kv
        self.parts: dict[str, _Part] = {}
        self.services: dict[str, tuple[Instance, ...]] = {}
        self.owner: dict[str, str] = {}  # service name -> the group it comes from
        self.dropping: set[str] = set()  # groups with refused entries
        self.noting: set[str] = set()  # groups with notes (a renamed service)
        # The map of the last catalog and the names touched since (model/catalog.derive):
        # the next catalog says which services changed, so later stages visit those only.
        self.last: ServiceMap | None = None
        self.touched: set[str] = set()

    def put(self, kv: dict[str, Any]) -> str:
        group = key_group(self.prefix, kv.get("key"))
        self.groups.setdefault(group, {})[str(kv.get("key"))] = kv
        return group

    def delete(self, key: Any) -> str:
        group = key_group(self.prefix, key)
        keys = self.groups.get(group)
        if keys is not None:
            keys.pop(str(key), None)
            if not keys:
                del self.groups[group]
        return group

    def rebuild(self, groups: set[str]) -> None:
        """Validate the keys of `groups` again and fold their parts into the catalog."""
        added = False
        for group in groups:
            old = self.parts.pop(group, None)
            self.dropping.discard(group)
            self.noting.discard(group)
            part = self._part(group)
            if part is not None:
                self.parts[group] = part
                if part.dropped:
                    self.dropping.add(group)
                if part.notes:
                    self.noting.add(group)
            now = part.services if part is not None else {}
            for name in old.services if old is not None else ():
                if name not in now and self.owner.get(name) == group:
                    del self.services[name], self.owner[name]
                    self.touched.add(name)
            for name, instances in now.items():
                # An existing name keeps its place: the catalog lists services by name.
                added = added or name not in self.services
                self.services[name], self.owner[name] = instances, group
                self.touched.add(name)
        if added:  # a new name: sorted again, as a full read lists them
            self.services = dict(sorted(self.services.items()))

    def _part(self, group: str) -> _Part | None:
        keys = self.groups.get(group)
        if not keys:
            return None
        builder = CatalogBuilder("")
        for key in sorted(keys, key=_key_order):
            add_kv(builder, self.prefix, keys[key])
        built = builder.build()
        return _Part(dict(built.services), built.dropped, dict(built.splits), built.notes)

    def catalog(self, source: str) -> Catalog:
        parts = self.parts
        dropped = tuple(d for g in sorted(self.dropping) for d in parts[g].dropped)
        splits = dict(parts[SPLITS].splits) if SPLITS in parts else {}
        services = derive(self.last, self.services, self.touched)
        self.last, self.touched = services, set()
        notes = tuple(n for g in sorted(self.noting) for n in parts[g].notes)
        return Catalog(services, dropped, source, str(self.revision), splits=splits, notes=notes)


def _key_order(key_b64: str) -> bytes:
    """etcd's order (by key bytes), as a range lists them."""
    try:
        return base64.b64decode(key_b64)
    except (TypeError, ValueError):
        return key_b64.encode()


class EtcdSource:
    def __init__(self, config: EtcdRegistry, services: Sequence[str] = ()) -> None:
        self.config = config
        self.client = EtcdClient(config)
        self.prefix = config.prefix.encode()
        # Incremental reads: the keys as last read, the events the stream delivered since,
        # and the revision from which those events are complete (None: not followed).
        self._store: _Store | None = None
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._since: int | None = None
        self.full_reads = 0
        # Watch state, shared with the watcher thread under _cond.
        self._cond = threading.Condition()
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._latest = 0  # highest revision known to have changed something under the prefix
        self._resume = 0  # next revision the stream must deliver
        self._error: str | None = None  # why the stream is down, while it is
        self._stream: requests.Response | None = None
        self._epoch = 0  # bumped when the cluster's history restarts; the stream re-opens
        # Counters for operators (and tests): how often the stream had to be re-opened.
        self.reconnects = 0
        self.compactions = 0
        self.history_resets = 0

    # --- read -------------------------------------------------------------------------

    def read(self) -> Catalog:
        with self._cond:
            store, since = self._store, self._since
            # A read with no event to apply ranges (a resync, a hold's re-check, a first
            # read): it is the one that notices a wiped or replaced cluster.
            follows = (
                store is not None
                and since is not None
                and since <= store.base + 1
                and self._error is None
                and bool(self._pending)
            )
            events = self._pending if follows else []
            self._pending = []
            if not follows:
                # The events just dropped are in the range about to be read; if that read
                # fails they are gone, so the next read must range too.
                self._store = None
        if not follows or store is None:
            return self._read_all()
        try:
            self._apply(store, events)
        except Exception:
            with self._cond:
                self._store = None  # half applied: rebuild from a full read
            raise
        return store.catalog(self._where())

    def _where(self) -> str:
        return f"etcd:{self.client.endpoint}{self.config.prefix}"

    def _apply(self, store: _Store, events: list[tuple[int, dict[str, Any]]]) -> None:
        """Events after `store.revision`, in order, onto the store; their groups rebuilt."""
        dirty: set[str] = set()
        for revision, event in events:
            if revision <= store.revision:
                continue  # already in the range the store was built from
            kv = event.get("kv")
            if not isinstance(kv, dict):
                continue
            if event.get("type") == "DELETE":
                dirty.add(store.delete(kv.get("key")))
            else:
                dirty.add(store.put(kv))
        if events:
            store.revision = max(store.revision, max(r for r, _ in events))
        if dirty:
            store.rebuild(dirty)

    def _read_all(self) -> Catalog:
        data = self.client.range(self.prefix, prefix_end(self.prefix))
        try:
            revision = int(data["header"]["revision"])
        except (KeyError, TypeError, ValueError):
            raise self.client.fail("/v3/kv/range", "answer has no header.revision") from None
        kvs = data.get("kvs") or []
        if not isinstance(kvs, list):
            raise self.client.fail("/v3/kv/range", "kvs is not a list")
        self._follow_history(revision)
        self.full_reads += 1
        store = _Store(self.config.prefix, revision)
        entries = []
        for kv in kvs:
            if isinstance(kv, dict):
                store.put(kv)
            else:
                entries.append(kv)
        store.rebuild(set(store.groups))
        with self._cond:
            events, self._pending = self._pending, []
            self._store = store
        self._apply(store, events)  # delivered while the range was on its way
        if entries:
            # Not incremental: a range entry that is not an object is refused in full reads.
            bad = Dropped("?", "?", "range entry is not an object")
            catalog = store.catalog(self._where())
            self._store = None
            return replace(catalog, dropped=catalog.dropped + (bad,) * len(entries))
        return store.catalog(self._where())

    def _follow_history(self, revision: int) -> None:
        """A revision below one already seen means the cluster's history started over (its
        data was wiped, or it was replaced). The revisions the stream waits for will come
        again as other changes, and the ones seen would make every wait return at once:
        a read loop that spins until the new history catches up. Watch from here instead."""
        with self._cond:
            if revision >= max(self._latest, self._resume - 1):
                return
            self._latest, self._resume = revision, revision + 1
            self._pending, self._since = [], revision + 1  # the old history's events are void
            self._epoch += 1
            self.history_resets += 1
            stream = self._stream
        if stream is not None:
            interrupt(stream)  # the watcher re-opens from the new revision

    # --- wait -------------------------------------------------------------------------

    def wait(self, version: str, timeout: float) -> bool:
        try:
            target = int(version)
        except ValueError:
            return True
        with self._cond:
            if self._watcher is None or not self._watcher.is_alive():
                self._resume = max(self._resume, target + 1)
                if self._since is None:
                    self._since = self._resume  # every event from here on is kept
                self._stop.clear()
                self._watcher = threading.Thread(
                    target=self._watch_loop, daemon=True, name="nginxgen-etcd-watch"
                )
                self._watcher.start()
            changed = self._cond.wait_for(lambda: self._latest > target, timeout)
            if not changed and self._error:
                raise RegistryError(self._error)
            return changed

    def _watch_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._watch_once()
                backoff = 0.05
            except _Reopen:
                continue
            except RegistryError as exc:
                self.reconnects += 1
                with self._cond:
                    self._error = f"{exc} (watch; retrying)"
                self._stop.wait(backoff)
                backoff = min(2.0, backoff * 2)
                self.client.rotate()

    def _watch_once(self) -> None:
        epoch = self._epoch
        r = self.client.watch(self.prefix, prefix_end(self.prefix), self._resume, STREAM_IDLE)
        url = f"{self.client.endpoint}/v3/watch"
        self._stream = r
        if self._stop.is_set():  # close() ran while the stream was being opened
            r.close()
            return
        if self._epoch != epoch:  # history restarted while opening: from the new revision
            r.close()
            raise _Reopen()
        last_message = time.monotonic()
        try:
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line:
                    last_message = time.monotonic()
                    self._handle(line, url, epoch)
        except (RegistryError, _Reopen):
            raise
        except Exception as exc:  # close() from another thread breaks the read in odd ways
            if self._stop.is_set():
                return
            if self._epoch != epoch:
                raise _Reopen() from None  # interrupted by _follow_history
            if time.monotonic() - last_message >= STREAM_IDLE * 0.9:
                raise _Reopen() from None  # just quiet: re-open, not an outage
            if isinstance(exc, requests.RequestException):
                raise self.client.http.fail(url, describe(exc, STREAM_IDLE)) from None
            raise self.client.http.fail(url, f"watch stream broke: {type(exc).__name__}") from None
        finally:
            r.close()
            self._stream = None
        if self._epoch != epoch:
            raise _Reopen()
        if not self._stop.is_set():
            raise self.client.http.fail(url, "watch stream ended")

    def _handle(self, line: bytes, url: str, epoch: int) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            raise self.client.http.fail(url, "watch sent a line that is not JSON") from None
        if "error" in message:
            error = printable(str(message["error"]))[:200]
            raise self.client.http.fail(url, f"watch error: {error}")
        result = message.get("result") or {}
        if result.get("canceled") and not result.get("compact_revision"):
            reason = printable(str(result.get("cancel_reason") or "no reason given"))[:200]
            raise self.client.http.fail(url, f"watch canceled by etcd: {reason}")
        with self._cond:
            self._error = None
            compacted = int(result.get("compact_revision") or 0)
            if compacted:
                # History before compacted is gone: what changed is unknown. Report a change
                # so the caller re-reads in full, and watch on from what still exists.
                self._latest = max(self._latest, compacted)
                self._resume = compacted
                # Events before `compacted` are lost: a read must range again.
                self._pending, self._since = [], compacted
                self.compactions += 1
                self._cond.notify_all()
                raise _Reopen()
            if epoch != self._epoch:
                return  # a stream of the history before a reset: void
            for event in result.get("events") or ():
                rev = int((event.get("kv") or {}).get("mod_revision") or 0)
                self._latest = max(self._latest, rev)
                self._resume = max(self._resume, rev + 1)
                if isinstance(event, dict):
                    self._pending.append((rev, event))
            if len(self._pending) > MAX_PENDING:
                self._pending, self._since = [], self._resume  # the next read ranges
            if result.get("events"):
                self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            interrupt(stream)
        self.client.close()
