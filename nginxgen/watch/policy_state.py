"""What nginxgen remembers between passes and restarts: when it first saw each instance,
and when an instance came back to serving. Persisted as a small JSON file so that a
sidecar restart neither restarts a warm-up ramp nor skips it.

The file is keyed by service/id@address (warmup.instance_key): an id that comes back with
a new address is a new instance and ramps from the start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..model.catalog import LIVE_STATES, Catalog, Instance, changed_since, instance_key
from ..model.observed import Observed
from ..spec import Spec
from ..util.atomic_write import write_atomic

log = logging.getLogger("nginxgen.state")
STATE_FILE = "nginxgen-state.json"
NO_KEYS: frozenset[str] = frozenset()
FORMAT = 1


def state_path(spec: Spec) -> Path:
    """`nginx.state_file`, or nginxgen-state.json next to `nginx.output`."""
    if spec.nginx.state_file:
        return Path(spec.nginx.state_file)
    return Path(spec.nginx.output).parent / STATE_FILE


@dataclass(frozen=True)
class _Service:
    """One service's entries, and what they were recorded from."""

    instances: tuple[Instance, ...]
    dead: frozenset[str]
    entries: dict[str, dict[str, Any]]


class PolicyState:
    """First-seen and return times per instance; `observe` turns a catalog into Observed.

    The first observation with no state file at all records every instance as older than
    nginxgen (no ramp): a gateway being set up, or a sidecar whose state was lost, must not
    ramp a whole fleet that was already serving.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._loaded: dict[str, dict[str, Any]] = {}  # the file's entries, until observed
        self._services: dict[str, _Service] = {}  # by service, as last observed
        self._dead_names: set[str] = set()  # the services with pseudo-dead keys among them
        self._catalog: Mapping[str, tuple[Instance, ...]] | None = None  # as last observed
        # Every entry's first-seen and return time, read-only: a change makes new ones.
        self._first_seen: Mapping[str, datetime] = MappingProxyType({})
        self._returned: Mapping[str, datetime] = MappingProxyType({})
        self._fresh = True  # no state to build on: what we see now predates us
        # Something to write: the watch loop saves after every pass, mostly unchanged, and
        # writing 10,000 entries each time would cost more than planning them.
        self._dirty = True
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("state file %s: cannot read (%s); starting afresh", path, exc.strerror)
            return
        try:
            data = json.loads(raw)
            entries = data["instances"]
            if data.get("format") != FORMAT or not isinstance(entries, dict):
                raise ValueError("unknown format")
            for key, entry in entries.items():
                self._loaded[str(key)] = {
                    "first_seen": _time(entry.get("first_seen")),
                    "returned": _time(entry.get("returned")),
                    "serving": bool(entry.get("serving", True)),
                }
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("state file %s: not a nginxgen state file; starting afresh", path)
            self._loaded = {}
            return
        self._fresh = False
        self._dirty = False

    def observe(self, catalog: Catalog, now: datetime, dead: Collection[str] = ()) -> Observed:
        """Record what `catalog` (and the prober's `dead` keys) show at `now`.

        A service whose instances are the very tuple of the last pass (sources keep the
        object of a service that did not change) and whose pseudo-dead keys are the same
        is not looked at again: one change among 10,000 services records one service."""
        dead = frozenset(dead)
        dead_by: dict[str, set[str]] = {}
        for key in dead:
            dead_by.setdefault(key.partition("/")[0], set()).add(key)
        known, current = self._services, catalog.services
        # Looked at: a service with a new tuple, and one with pseudo-dead keys now or before.
        # The catalog's map may say which services changed since the last pass's.
        get = known.get
        moved = changed_since(current, self._catalog)
        look = [
            n
            for n in (current if moved is None else sorted(n for n in moved if n in current))
            if (s := get(n)) is None or s.instances is not current[n]
        ]
        seen = set(look)
        look += sorted(
            n for n in dead_by.keys() | self._dead_names if n in current and n not in seen
        )
        services = dict(known)  # the others are the very entries of the last pass
        left = known.keys() - current.keys() if moved is None else [
            n for n in moved if n not in current
        ]  # fmt: skip
        gone = [services.pop(name) for name in left if name in services]
        redone: list[tuple[_Service | None, _Service]] = []
        changed, loaded_seen = False, 0
        for name in look:
            instances = current[name]
            mine = frozenset(dead_by[name]) if name in dead_by else NO_KEYS
            last = known.get(name)
            if last is not None and last.instances is instances and last.dead == mine:
                continue
            fresh = _Service(instances, mine, self._entries_of(instances, mine, last, now))
            services[name] = fresh
            if last is not None:
                if fresh.entries == last.entries:
                    continue
                changed = True
            else:
                loaded = self._loaded
                loaded_seen += sum(k in loaded for k in fresh.entries)
                changed = changed or any(loaded.get(k) != e for k, e in fresh.entries.items())
            redone.append((last, fresh))
        self._dead_names = dead_by.keys() & current.keys()
        # Instances gone from the registry are forgotten: if they register again, they ramp.
        if changed or gone or loaded_seen < len(self._loaded):
            self._dirty = True
        if redone or gone:
            self._forget_and_add([last for last, _ in redone if last] + gone, redone)
        self._services, self._catalog = services, current
        self._loaded = {}
        self._fresh = False
        return self.observed(dead)

    def _entries_of(
        self,
        instances: tuple[Instance, ...],
        dead: frozenset[str],
        last: _Service | None,
        now: datetime,
    ) -> dict[str, dict[str, Any]]:
        before = last.entries if last is not None else self._loaded
        entries: dict[str, dict[str, Any]] = {}
        for inst in instances:
            key = instance_key(inst)
            serving = inst.state in LIVE_STATES and key not in dead
            entry = before.get(key)
            if entry is None:
                entry = {
                    "first_seen": None if self._fresh else now,
                    "returned": None,
                    "serving": serving,
                }
            else:
                entry = dict(entry)
                if serving and not entry["serving"]:
                    entry["returned"] = now  # back in service: ramp again from here
                entry["serving"] = serving
            entries[key] = entry
        return entries

    def _forget_and_add(
        self, old: list[_Service], redone: list[tuple[_Service | None, _Service]]
    ) -> None:
        """New first-seen and return mappings (never changed in place once handed out: the
        plan memo compares them by identity first)."""
        first_seen, returned = dict(self._first_seen), dict(self._returned)
        for service in old:
            for key in service.entries:
                first_seen.pop(key, None)
                returned.pop(key, None)
        for _, service in redone:
            for key, e in service.entries.items():
                if e["first_seen"]:
                    first_seen[key] = e["first_seen"]
                if e["returned"]:
                    returned[key] = e["returned"]
        self._first_seen, self._returned = MappingProxyType(first_seen), MappingProxyType(returned)

    @property
    def _entries(self) -> dict[str, dict[str, Any]]:
        """Every instance's entry, flat (the file's layout)."""
        if not self._services:
            return self._loaded
        return {k: e for s in self._services.values() for k, e in s.entries.items()}

    def observed(self, dead: Collection[str] = ()) -> Observed:
        if not self._services and self._loaded:  # not observed yet: what the file says
            return Observed(
                first_seen={k: e["first_seen"] for k, e in self._loaded.items() if e["first_seen"]},
                returned={k: e["returned"] for k, e in self._loaded.items() if e["returned"]},
                dead=frozenset(dead),
            )
        return Observed(first_seen=self._first_seen, returned=self._returned, dead=frozenset(dead))

    def save(self) -> None:
        """Write the state atomically (call after a config was installed)."""
        if self.path is None or not self._dirty:
            return
        data = {
            "format": FORMAT,
            "instances": {
                k: {
                    "first_seen": _iso(e["first_seen"]),
                    "returned": _iso(e["returned"]),
                    "serving": e["serving"],
                }
                for k, e in sorted(self._entries.items())
            },
        }
        try:
            # nginxgen's own file at a place the spec names: its directory may be made.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(data, indent=1) + "\n", backup=False)
            self._dirty = False
        except OSError as exc:
            log.warning("state file %s: cannot write (%s)", self.path, exc.strerror)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(str(value))
    if dt.tzinfo is None:
        raise ValueError("naive time")
    return dt
