"""Which version an instance belongs to (docs/split.md#versions).

A version is read, in this order, from the instance's metadata (`meta.<key>`; etcd's value
field `version` lands there too), then from a tag `<key>=NAME`. `<key>` is
`split.version_from` (default `version`). No version: `default`. A name that is not a
valid version name makes the instance take no split traffic (None), with a plan note.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..spec.split import DEFAULT_VERSION, VERSION_NAME
from .catalog import Instance


def version_of(inst: Instance, key: str = "version") -> str | None:
    raw: str | None = None
    for k, v in inst.meta:
        if k == key:
            raw = v
            break
    if raw is None:
        prefix = key + "="
        raw = next((t[len(prefix) :] for t in inst.tags if t.startswith(prefix)), None)
    if raw is None or raw == "":
        return DEFAULT_VERSION
    return raw if VERSION_NAME.match(raw) else None


def by_version(
    instances: Iterable[Instance], key: str = "version"
) -> tuple[dict[str, tuple[Instance, ...]], tuple[Instance, ...]]:
    """Instances grouped by version (names sorted), and those whose version is invalid."""
    groups: dict[str, list[Instance]] = {}
    invalid: list[Instance] = []
    for inst in instances:
        name = version_of(inst, key)
        if name is None:
            invalid.append(inst)
        else:
            groups.setdefault(name, []).append(inst)
    return {k: tuple(groups[k]) for k in sorted(groups)}, tuple(invalid)
