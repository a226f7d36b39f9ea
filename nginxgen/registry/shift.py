"""Split overrides kept in the registry itself, so every gateway watching it applies them.

Where (docs/split.md#fleet-wide-shifts):
- etcd: the key `<prefix>.nginxgen/split/<service>` (under the spec's prefix, so the
  sources' watch sees it change); its value `{"weights": {...}}`.
- Consul: the KV key `<kv_prefix>split/<service>` (default `nginxgen/split/carts`), read
  with the catalog and watched by a blocking query like the services.
- file registry: `<registry file's name>.split.json` beside it, one object of
  service -> `{"weights": {...}}`, replaced atomically.

An override is checked like spec input (`parse_override`): by `nginxgen shift` before it
is written, and again by the plan when it is read (a hand-written bad one is reported,
and the spec's weights stay in force).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..spec.split import Split, check_weights

ETCD_DIR = ".nginxgen/split/"
SPLIT_DIR = "split/"  # under a Consul registry's kv_prefix
FILE_SUFFIX = ".split.json"
MAX_TEXT = 16 * 1024


class ShiftError(Exception):
    """An override that cannot be used; str() is one sentence that names it."""


def etcd_key(prefix: str, service: str) -> str:
    return f"{prefix}{ETCD_DIR}{service}"


def file_path(registry_path: str | Path) -> Path:
    p = Path(registry_path)
    return p.with_name(p.name + FILE_SUFFIX)


def parse_override(text: str, split: Split, where: str) -> dict[str, float]:
    """The weights an override sets, checked against the spec's split."""
    if len(text) > MAX_TEXT:
        raise ShiftError(f"{where}: larger than {MAX_TEXT} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ShiftError(f"{where}: not valid JSON") from None
    return check_override(data, split, where)


def check_override(data: Any, split: Split, where: str) -> dict[str, float]:
    if not isinstance(data, dict) or "weights" not in data:
        raise ShiftError(f'{where}: must be an object with weights, e.g. {{"weights": ...}}')
    unknown = sorted(set(map(str, data)) - {"weights", "set_at"})
    if unknown:
        raise ShiftError(f"{where}: unknown field(s) {', '.join(unknown)}")
    try:
        weights = check_weights(data["weights"])
    except ValueError as exc:
        raise ShiftError(f"{where}: {exc}") from None
    extra = sorted(set(weights) - set(split.weights))
    if extra:
        known = ", ".join(split.versions)
        raise ShiftError(
            f"{where}: version {', '.join(map(repr, extra))} is not in the spec's split "
            f"(known: {known}); add it to services.NAME.split.weights first"
        )
    return {v: weights.get(v, 0.0) for v in split.versions}


def shifted(
    split: Split, current: Mapping[str, float], assign: Mapping[str, float]
) -> dict[str, float]:
    """`carts green=50`: the named versions take their shares; the others keep their
    proportions of what is left (evenly if they had none)."""
    for name in assign:
        if name not in split.weights:
            known = ", ".join(split.versions)
            raise ShiftError(f"version {name!r} is not in the spec's split (known: {known})")
    given = sum(assign.values())
    if given > 100 + 1e-9:
        raise ShiftError(f"the shares given add up to {given:g}, more than 100")
    rest = [v for v in split.versions if v not in assign]
    left = 100.0 - given
    out = dict(assign)
    if rest:
        base = sum(current.get(v, 0.0) for v in rest)
        for v in rest:
            share = current.get(v, 0.0) / base if base > 0 else 1 / len(rest)
            out[v] = round(left * share, 2)
        out[rest[-1]] = round(100.0 - sum(out[v] for v in split.versions if v != rest[-1]), 2)
    elif abs(left) > 1e-9:
        raise ShiftError(f"the shares given add up to {given:g}, not 100")
    return check_override({"weights": out}, split, "the shift")


def to_text(weights: Mapping[str, float], now: datetime | None = None) -> str:
    at = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    clean = {k: (int(v) if float(v).is_integer() else v) for k, v in sorted(weights.items())}
    return json.dumps({"weights": clean, "set_at": at}, separators=(",", ":"))


def parse_assignments(items: list[str]) -> dict[str, float]:
    """["green=50", "blue=50"] → {"green": 50.0, "blue": 50.0}."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            share = float(value) if sep else float("nan")
        except ValueError:
            share = float("nan")
        if not sep or not name or share != share:
            raise ShiftError(f"{item!r}: write VERSION=SHARE, e.g. green=50")
        if name in out:
            raise ShiftError(f"version {name!r} is given twice")
        out[name] = share
    return out


class OverrideStore:
    """Reads and writes overrides where the spec's registry keeps them."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.kind: str = registry.kind
        if self.kind not in ("file", "etcd", "consul"):
            raise ShiftError(
                f"registry kind {self.kind!r}: shift writes overrides into etcd, Consul KV "
                "or beside a file registry only"
            )

    def where(self, service: str) -> str:
        if self.kind == "etcd":
            return f"etcd key {etcd_key(self.registry.prefix, service)}"
        if self.kind == "consul":
            return f"Consul KV key {self.registry.kv_prefix}{SPLIT_DIR}{service}"
        return f"file {file_path(self.registry.path)}"

    def write(self, service: str, text: str | None) -> None:
        """`text` None removes the override (the spec's weights are in force again)."""
        if self.kind == "etcd":
            from .etcd import EtcdClient

            client = EtcdClient(self.registry)
            try:
                key = etcd_key(self.registry.prefix, service).encode()
                if text is None:
                    client.delete(key)
                else:
                    client.put(key, text.encode())
            finally:
                client.close()
            return
        if self.kind == "consul":
            from .consul import ConsulClient

            consul = ConsulClient(self.registry)
            try:
                kv_key = f"{self.registry.kv_prefix}{SPLIT_DIR}{service}"
                consul.kv_put(kv_key, None if text is None else text.encode())
            finally:
                consul.close()
            return
        from ..util.atomic_write import write_atomic

        path = file_path(self.registry.path)
        try:
            current = json.loads(path.read_bytes()) if path.exists() else {}
        except ValueError:
            current = None
        if not isinstance(current, dict):
            raise ShiftError(f"{path}: not a JSON object of service -> override; fix or remove it")
        if text is None:
            current.pop(service, None)
        else:
            current[service] = json.loads(text)
        body = json.dumps(current, sort_keys=True, indent=1) + "\n"
        write_atomic(path, body.encode(), backup=False)
