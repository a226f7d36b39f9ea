"""What nginxgen remembers between passes and restarts: when it first saw each instance,
and when an instance came back to serving. Persisted as a small JSON file so that a
sidecar restart neither restarts a warm-up ramp nor skips it.

The file is keyed by service/id@address (warmup.instance_key): an id that comes back with
a new address is a new instance and ramps from the start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from ..model.catalog import LIVE_STATES, Catalog, instance_key
from ..model.observed import Observed
from ..spec import Spec
from ..util.atomic_write import write_atomic

log = logging.getLogger("nginxgen.state")
STATE_FILE = "nginxgen-state.json"
FORMAT = 1


def state_path(spec: Spec) -> Path:
    """`nginx.state_file`, or nginxgen-state.json next to `nginx.output`."""
    if spec.nginx.state_file:
        return Path(spec.nginx.state_file)
    return Path(spec.nginx.output).parent / STATE_FILE


class PolicyState:
    """First-seen and return times per instance; `observe` turns a catalog into Observed.

    The first observation with no state file at all records every instance as older than
    nginxgen (no ramp): a gateway being set up, or a sidecar whose state was lost, must not
    ramp a whole fleet that was already serving.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}
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
                self._entries[str(key)] = {
                    "first_seen": _time(entry.get("first_seen")),
                    "returned": _time(entry.get("returned")),
                    "serving": bool(entry.get("serving", True)),
                }
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("state file %s: not a nginxgen state file; starting afresh", path)
            self._entries = {}
            return
        self._fresh = False
        self._dirty = False

    def observe(self, catalog: Catalog, now: datetime, dead: Collection[str] = ()) -> Observed:
        """Record what `catalog` (and the prober's `dead` keys) show at `now`."""
        entries: dict[str, dict[str, Any]] = {}
        for instances in catalog.services.values():
            for inst in instances:
                key = instance_key(inst)
                serving = inst.state in LIVE_STATES and key not in dead
                entry = self._entries.get(key)
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
        # Instances gone from the registry are forgotten: if they register again, they ramp.
        if entries != self._entries:
            self._dirty = True
        self._entries = entries
        self._fresh = False
        return self.observed(dead)

    def observed(self, dead: Collection[str] = ()) -> Observed:
        return Observed(
            first_seen={k: e["first_seen"] for k, e in self._entries.items() if e["first_seen"]},
            returned={k: e["returned"] for k, e in self._entries.items() if e["returned"]},
            dead=frozenset(dead),
        )

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
