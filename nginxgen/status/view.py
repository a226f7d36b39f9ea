"""The sidecar's status document, read and shown as one rich table per service.

The document (GET /status on the sidecar's `watch.listen`):

    {"generation": "3f2a9c", "served_generation": "3f2a9c", "window_seconds": 60,
     "services": {"carts": [
        {"id": "carts-1", "address": "10.0.0.1:8080", "state": "warming", "percent": 30,
         "reason": "step 3 of 10", "planned_weight": 30, "weight": 30,
         "requests": 120, "errors": 1}]}}

`state` is one of STATES; `percent` only for `warming`; `weight` is the weight nginx
serves now (the running config, or in dynamic mode the pushed endpoints), which lags
`planned_weight` while a change waits for its debounce or push; `requests` and `errors`
(5xx) count the last `window_seconds`, and are null when nginx's /metrics is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

STATES = {
    "serving": "green",
    "warming": "cyan",
    "draining": "yellow",
    "pseudo_dead": "red",
    "passive_failed": "red",
    "out": "dim",
}


class BadDocument(ValueError):
    """The sidecar answered something that is not a status document."""


@dataclass(frozen=True)
class Row:
    id: str
    address: str
    state: str
    percent: int | None
    reason: str
    planned_weight: int
    weight: int | None
    requests: float | None
    errors: float | None


@dataclass(frozen=True)
class Status:
    generation: str
    served_generation: str | None
    window_seconds: float
    services: dict[str, tuple[Row, ...]]


def _field(obj: dict[str, Any], key: str, kind: Any, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        want = getattr(kind, "__name__", None) or " or ".join(k.__name__ for k in kind)
        raise BadDocument(f"{where}.{key}: expected {want}, got {value!r}")
    return value


def parse(data: Any) -> Status:
    """The document as values; BadDocument names the first field that is wrong."""
    if not isinstance(data, dict):
        raise BadDocument("the answer is not a JSON object")
    services = _field(data, "services", dict, "status")
    out: dict[str, tuple[Row, ...]] = {}
    for name, items in services.items():
        if not isinstance(items, list):
            raise BadDocument(f"services.{name}: expected a list of instances")
        rows = []
        for i, item in enumerate(items):
            where = f"services.{name}[{i}]"
            if not isinstance(item, dict):
                raise BadDocument(f"{where}: expected an object")
            state = _field(item, "state", str, where)
            if state not in STATES:
                raise BadDocument(f"{where}.state: unknown state {state!r}")
            num = (int, float, type(None))
            rows.append(
                Row(
                    id=_field(item, "id", str, where),
                    address=_field(item, "address", str, where),
                    state=state,
                    percent=_field(item, "percent", (int, type(None)), where),
                    reason=item.get("reason") or "",
                    planned_weight=_field(item, "planned_weight", int, where),
                    weight=_field(item, "weight", (int, type(None)), where),
                    requests=_field(item, "requests", num, where),
                    errors=_field(item, "errors", num, where),
                )
            )
        out[str(name)] = tuple(rows)
    return Status(
        generation=str(data.get("generation") or ""),
        served_generation=data.get("served_generation"),
        window_seconds=float(data.get("window_seconds") or 0),
        services=out,
    )


def _state(row: Row) -> Text:
    label = row.state.replace("_", "-")
    if row.state == "warming" and row.percent is not None:
        label = f"warming {row.percent} %"
    return Text(label, style=STATES[row.state])


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def tables(status: Status) -> list[Table]:
    """One table per service, instances in the document's order."""
    served = status.served_generation
    span = f"last {status.window_seconds:.0f} s" if status.window_seconds else "no history yet"
    out = []
    for name, rows in sorted(status.services.items()):
        t = Table(title=Text(name, style="bold"), title_justify="left", caption_justify="left")
        for col in ("instance", "address", "state", "why"):
            t.add_column(col)
        # Weights: planned (the last plan) and in force (what nginx balances with now).
        for col in ("planned", "in force", "requests", "5xx"):
            t.add_column(col, justify="right")
        for r in rows:
            lag = r.weight is not None and r.weight != r.planned_weight
            # Registry and probe text is data, never rich markup: Text, not str.
            t.add_row(
                Text(r.id),
                Text(r.address),
                _state(r),
                Text(r.reason),
                str(r.planned_weight),
                Text("-" if r.weight is None else str(r.weight), style="bold" if lag else ""),
                _count(r.requests),
                Text(_count(r.errors), style="red" if r.errors else ""),
            )
        if served is not None and served != status.generation:
            t.caption = f"nginx serves generation {served}, the sidecar applied {status.generation}"
        else:
            t.caption = f"generation {status.generation or '-'}"
        t.caption += f"; weights planned and in force; requests and 5xx: {span}"
        out.append(t)
    return out
