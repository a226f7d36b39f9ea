"""State rules shared by the adapters: a registry's verdict can only be made worse by metadata.

Instances may carry `state`, `weight` and `registered_at` in their metadata (Consul Meta,
Nacos metadata, Eureka metadata). A metadata state can take an instance out of rotation
(`draining`, `down`) or hold it in warm-up (`starting`), but never revives an instance
its registry calls down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_RANK = {"up": 0, "starting": 1, "draining": 2, "down": 3}


def worst(*states: Any) -> Any:
    """The least available of the given states; an unknown value wins so it gets reported."""
    known = [s for s in states if s is not None]
    for s in known:
        if not isinstance(s, str) or s.lower() not in _RANK:
            return s  # the catalog drops the instance with a message naming this value
    if not known:
        return None
    return max((s.lower() for s in known), key=_RANK.__getitem__)


def meta_overrides(meta: Any) -> dict[str, Any]:
    """state / weight / registered_at from metadata, when present."""
    if not isinstance(meta, Mapping):
        return {}
    return {
        k: meta[k] for k in ("state", "weight", "registered_at") if meta.get(k) not in (None, "")
    }
