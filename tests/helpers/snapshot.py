"""What nginx's init makes of a boot snapshot and its journal, read in Python: the tests'
way to say "a restart would serve this" without restarting (lua/nginxgen/endpoints/
feed.lua's replay does the same for nginx; tests/lua/journal_test.lua tests it there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nginxgen.deploy.journal import journal_path, parse


def boot_endpoints(snapshot: Path) -> tuple[int, dict[str, Any]]:
    """(generation, service → endpoint set) after the journal's records above it."""
    snap = json.loads(snapshot.read_bytes())
    gen, services = snap["generation"], dict(snap["services"])
    try:
        records = parse(Path(journal_path(str(snapshot))).read_bytes())
    except FileNotFoundError:
        records = None
    if records is not None and records.base == gen:
        for payload in records.payloads:
            rec = json.loads(payload)
            if rec["generation"] > gen:
                gen = rec["generation"]
                services.update(rec["services"])
    return gen, services
