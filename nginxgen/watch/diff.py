"""What changed: between two plans, in the words an operator reads in a reload log line;
between the installed text and a candidate, as `watch --dry-run` shows it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..model.plan import Plan, Standing, Upstream, changed_upstreams


@dataclass(frozen=True)
class PlanDiff:
    services_added: tuple[str, ...] = ()
    services_removed: tuple[str, ...] = ()  # gone from the registry: routes answer 503
    # Still in the registry with nobody to serve (routes answer 503): "name: why".
    services_unserved: tuple[str, ...] = ()
    services_back: tuple[str, ...] = ()  # served again (or at last), never gone from the registry
    servers_added: tuple[str, ...] = ()  # "service address"
    servers_removed: tuple[str, ...] = ()
    reweighted: tuple[str, ...] = ()  # "service address 5->10"
    other: bool = False  # something else changed (routes, settings, templates)

    @property
    def empty(self) -> bool:
        return not (self.as_dict() or self.other)

    def as_dict(self) -> dict[str, Any]:
        fields = {
            "services_added": self.services_added,
            "services_removed": self.services_removed,
            "services_unserved": self.services_unserved,
            "services_back": self.services_back,
            "servers_added": self.servers_added,
            "servers_removed": self.servers_removed,
            "reweighted": self.reweighted,
        }
        return {k: list(v) for k, v in fields.items() if v}

    def summary(self, limit: int = 5, why: str = "") -> str:
        """What changed, then `why` (the reason's words) in brackets. When the plans are
        the same but nginx reloads anyway (SIGHUP, a renewed certificate), `why` alone."""
        parts = []
        for key, values in self.as_dict().items():
            more = f" (+{len(values) - limit})" if len(values) > limit else ""
            if key == "services_unserved":  # each value says its own why
                parts.append("; ".join(values[:limit]) + more)
                continue
            label = "now serving" if key == "services_back" else key.replace("_", " ")
            parts.append(f"{label}: {', '.join(values[:limit])}{more}")
        if not parts:
            if not self.other:
                return why or "no change"
            parts.append("settings or routes changed")
        text = "; ".join(parts)
        return f"{text} ({why})" if why else text


def diff_plans(old: Plan | None, new: Plan) -> PlanDiff:
    """What changed from `old` to `new`. When `new` derives from `old` (their revisions say
    which upstreams may differ, model/plan.changed_upstreams) only those are looked at: a
    push among 10,000 services costs what it changed. Otherwise every upstream is; the
    answer is the same either way (tests/watch/test_diff.py)."""
    names = changed_upstreams(old, new) if old is not None else None
    if old is None or names is None:
        before = _serving(old.upstreams) if old else {}
        return _diff(old, new, before, _serving(new.upstreams), None)
    a, b = old.revision.by_name, new.revision.by_name  # type: ignore[union-attr]
    before = _serving(a[n] for n in names if n in a)
    after = _serving(b[n] for n in names if n in b)
    return _diff(old, new, before, after, names)


def _serving(upstreams: Iterable[Upstream]) -> dict[str, Upstream]:
    # A dynamic upstream with no servers is a service with nobody to serve, as a missing
    # upstream is in reload mode.
    return {u.name: u for u in upstreams if u.servers or not u.dynamic}


def _diff(
    old: Plan | None,
    new: Plan,
    before: dict[str, Upstream],
    after: dict[str, Upstream],
    names: frozenset[str] | None,
) -> PlanDiff:
    """The diff of `before` and `after` (the serving upstreams compared); `names`: the
    only upstreams that may differ (None: any)."""
    added, removed, reweighted = [], [], []
    for name in before.keys() & after.keys():
        if before[name] is after[name] or before[name] == after[name]:
            continue
        b = {s.address: s for s in before[name].servers}
        a = {s.address: s for s in after[name].servers}
        added += [f"{name} {addr}" for addr in a.keys() - b.keys()]
        removed += [f"{name} {addr}" for addr in b.keys() - a.keys()]
        reweighted += [
            f"{name} {addr} {b[addr].weight}->{a[addr].weight}"
            for addr in a.keys() & b.keys()
            if a[addr].weight != b[addr].weight
        ]
    # A service without an upstream that the registry still lists is not "removed".
    gone = before.keys() - after.keys()
    came = after.keys() - before.keys()
    unserved = {n for n in gone if n in new.standings}
    back = {n for n in came if old is not None and n in old.standings}
    diff = PlanDiff(
        services_added=tuple(sorted(came - back)),
        services_removed=tuple(sorted(gone - unserved)),
        services_unserved=tuple(
            f"{n}: {_unserved_why(new.standings[n])}" for n in sorted(unserved)
        ),
        services_back=tuple(sorted(back)),
        servers_added=tuple(sorted(added)),
        servers_removed=tuple(sorted(removed)),
        reweighted=tuple(sorted(reweighted)),
    )
    if old is None or (old.locations is not new.locations and old.locations != new.locations):
        return replace(diff, other=True)
    if not diff.empty:
        return diff
    return replace(diff, other=_plans_differ(old, new, names))


def _plans_differ(old: Plan, new: Plan, names: frozenset[str] | None) -> bool:
    """old != new. An upstream the revisions name that differs settles it (equal plans
    hold equal upstreams under each name); only when none does are the plans compared
    whole (a change that moved no upstream: no push carries it)."""
    if names is not None:
        a, b = old.revision.by_name, new.revision.by_name  # type: ignore[union-attr]
        if any(a.get(n) != b.get(n) for n in names):
            return True
    return old != new


# A service whose instances all stand the same way, in the words of its log line.
_ALL_STAND = {
    "draining": "every instance draining",
    "pseudo_dead": "every instance pseudo-dead",
    "out": "every instance down or out",
}


def _unserved_why(standings: tuple[Standing, ...]) -> str:
    states = {s.state for s in standings}
    if not states:
        return "no instances in the registry"
    if len(states) == 1:
        return _ALL_STAND.get(states.pop(), "no instance to serve")
    return "no instance to serve"


def show_text_diff(installed: str | None, candidate: str, output: str) -> None:
    """A unified diff of `output` against the candidate text, on stdout (coloured on a
    terminal): what `watch --dry-run` would change."""
    from rich.console import Console
    from rich.text import Text

    out = Console(highlight=False)
    lines = difflib.unified_diff(
        (installed or "").splitlines(keepends=True),
        candidate.splitlines(keepends=True),
        fromfile=f"{output} (installed)",
        tofile=f"{output} (candidate)",
    )
    styles = {"+": "green", "-": "red", "@": "cyan"}
    for line in lines:
        out.print(Text(line.rstrip("\n"), style=styles.get(line[:1], "")), soft_wrap=True)
