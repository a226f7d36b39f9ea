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

from ..model.catalog import Catalog, Dropped, Instance

MAX_HOSTS = 65536


class HostKinds:
    """Which hosts are IP literals, remembered (a BuildCache part): hosts repeat on every
    read, and parsing 20,000 addresses per pass is not free."""

    def __init__(self, max_hosts: int = MAX_HOSTS) -> None:
        self.max_hosts = max_hosts
        self._is_ip: dict[str, bool] = {}
        # Per service: the instances last looked at (the very tuple: sources keep the
        # object of a service that did not change) and the host names among them.
        self._names: dict[str, tuple[tuple[Instance, ...], frozenset[str]]] = {}

    def names_in(self, catalog: Catalog) -> set[str]:
        """Every host in `catalog` that is a name, not an IP literal: one identity check
        per service whose instances are the tuple of the last call."""
        known, seen = self._names, {}
        names: set[str] = set()
        for service, insts in catalog.services.items():
            entry = known.get(service)
            if entry is None or entry[0] is not insts:
                entry = (insts, frozenset(i.host for i in insts if not self.is_ip(i.host)))
            seen[service] = entry
            if entry[1]:
                names |= entry[1]
        self._names = seen
        return names

    def is_ip(self, host: str) -> bool:
        known = self._is_ip.get(host)
        if known is None:
            if len(self._is_ip) >= self.max_hosts:
                self._is_ip.clear()
            known = self._is_ip[host] = _is_ip(host)
        return known


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


def drop_unresolvable(catalog: Catalog, hosts: HostKinds | None = None) -> Catalog:
    """`catalog` without the instances whose host name does not resolve now."""
    hosts = hosts or HostKinds()
    is_ip = hosts.is_ip
    names = sorted(hosts.names_in(catalog))
    if not names:
        return catalog
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        ok = dict(zip(names, pool.map(_resolves, names), strict=True))
    dropped = list(catalog.dropped)
    services = {}
    for name, insts in catalog.services.items():
        keep = []
        for inst in insts:
            if is_ip(inst.host) or ok[inst.host]:
                keep.append(inst)
            else:
                dropped.append(Dropped(name, inst.id, f"host {inst.host!r} does not resolve"))
        # Nothing dropped: the very tuple, so identity checks downstream still hold.
        services[name] = insts if len(keep) == len(insts) else tuple(keep)
    return replace(catalog, services=services, dropped=tuple(dropped))
