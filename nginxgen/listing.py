"""A Catalog as people and machines read it (`nginxgen services`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.table import Table
from rich.text import Text

from .model.catalog import Catalog

STATE_STYLE = {"up": "green", "starting": "cyan", "draining": "yellow", "down": "red"}


def age(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "-"
    seconds = int((now - since).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def catalog_table(catalog: Catalog, now: datetime | None = None) -> Table:
    now = now or datetime.now(timezone.utc)
    table = Table(title=Text(catalog.source), title_justify="left")
    for column in ("service", "instance", "address", "state", "weight"):
        table.add_column(column, no_wrap=True)
    table.add_column("registered")
    table.add_column("tags", overflow="fold")
    for name, instances in catalog.services.items():
        if not instances:
            table.add_row(Text(name), Text("(no instances)", style="dim"), "", "", "", "", "")
        for inst in instances:
            registered = (
                f"{inst.registered_at:%Y-%m-%d %H:%M:%S}Z ({age(inst.registered_at, now)})"
                if inst.registered_at
                else "-"
            )
            # Text(), not markup: registry strings must never be read as rich markup.
            table.add_row(
                Text(name),
                Text(inst.id),
                Text(inst.address),
                Text(inst.state, style=STATE_STYLE.get(inst.state, "")),
                str(inst.weight),
                registered,
                Text(",".join(inst.tags)),
            )
    return table


def catalog_json(catalog: Catalog) -> dict[str, Any]:
    return {
        "source": catalog.source,
        "version": catalog.version,
        "read_at": catalog.read_at.isoformat(),
        "services": {
            name: [
                {
                    "id": i.id,
                    "host": i.host,
                    "port": i.port,
                    "address": i.address,
                    "state": i.state,
                    "weight": i.weight,
                    "registered_at": i.registered_at.isoformat() if i.registered_at else None,
                    "tags": list(i.tags),
                    "meta": dict(i.meta),
                }
                for i in instances
            ]
            for name, instances in catalog.services.items()
        },
        "dropped": [
            {"service": d.service, "instance": d.instance, "field": d.field, "reason": d.reason}
            for d in catalog.dropped
        ],
        "notes": list(catalog.notes),
    }
