"""Drop instances whose DNS name does not resolve, before nginx sees them.

nginx resolves upstream server names once, when it loads the config, and refuses the
whole config if one name fails. One stale registry entry must not block every update,
so unresolvable names are dropped here with a reason, like any other bad entry.
"""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import lru_cache

from .catalog import Catalog, Dropped


@lru_cache(maxsize=65536)  # hosts repeat on every read; parsing 20,000 addresses is not free
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolves(host: str) -> bool:
    try:
        return bool(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        return False


def drop_unresolvable(catalog: Catalog) -> Catalog:
    names = sorted(
        {i.host for insts in catalog.services.values() for i in insts if not _is_ip(i.host)}
    )
    if not names:
        return catalog
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        ok = dict(zip(names, pool.map(_resolves, names), strict=True))
    dropped = list(catalog.dropped)
    services = {}
    for name, insts in catalog.services.items():
        keep = []
        for inst in insts:
            if _is_ip(inst.host) or ok[inst.host]:
                keep.append(inst)
            else:
                dropped.append(Dropped(name, inst.id, f"host {inst.host!r} does not resolve"))
        services[name] = tuple(keep)
    return replace(catalog, services=services, dropped=tuple(dropped))
