"""Drop instances whose DNS name does not resolve, before nginx sees them.

nginx resolves upstream server names once, when it loads the config, and refuses the
whole config if one name fails. One stale registry entry must not block every update,
so unresolvable names are dropped here with a reason, like any other bad entry.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..model.catalog import Catalog, Dropped, Instance, changed_since, derive

Services = Mapping[str, tuple[Instance, ...]]

MAX_HOSTS = 65536


class HostKinds:
    """Which hosts are IP literals, remembered (a BuildCache part): hosts repeat on every
    read, and parsing 20,000 addresses per pass is not free. Also what the last
    `drop_unresolvable` was given and answered, so that its answers form a lineage."""

    def __init__(self, max_hosts: int = MAX_HOSTS) -> None:
        self.max_hosts = max_hosts
        self._is_ip: dict[str, bool] = {}
        # Per service: the instances last looked at (the very tuple: sources keep the
        # object of a service that did not change) and the host names among them.
        self._names: dict[str, tuple[tuple[Instance, ...], frozenset[str]]] = {}
        self._named: set[str] = set()  # the services with host names among them
        self._last: Services | None = None  # of the last call
        self.passed: tuple[Services, Services] | None = None  # drop_unresolvable's in, out

    def names_in(self, catalog: Catalog) -> set[str]:
        """Every host in `catalog` that is a name, not an IP literal: only the services the
        catalog's map says changed since the last call (model/catalog.changed_since), or
        else one identity check per service whose instances are the tuple of the last."""
        current = catalog.services
        changed = changed_since(current, self._last)
        known = self._names
        if changed is None:
            known = {}
            for service, insts in current.items():
                entry = self._names.get(service)
                known[service] = entry if entry is not None and entry[0] is insts else (
                    self._entry(insts)
                )  # fmt: skip
            self._named = {s for s, e in known.items() if e[1]}
        else:
            for service in changed:
                if service not in current:
                    known.pop(service, None)
                    self._named.discard(service)
                    continue
                insts, entry = current[service], known.get(service)
                if entry is None or entry[0] is not insts:
                    entry = known[service] = self._entry(insts)
                if entry[1]:
                    self._named.add(service)
                else:
                    self._named.discard(service)
        self._names, self._last = known, current
        names: set[str] = set()
        for service in self._named:
            names |= known[service][1]
        return names

    @property
    def named(self) -> set[str]:
        """The services with host names among their instances, as of the last `names_in`."""
        return self._named

    def _entry(self, insts: tuple[Instance, ...]) -> tuple[tuple[Instance, ...], frozenset[str]]:
        return insts, frozenset(i.host for i in insts if not self.is_ip(i.host))

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
    """`catalog` without the instances whose host name does not resolve now. Its services
    derive from the last answer given with the same `hosts` (model/catalog.derive): only
    the services that have host names, or changed in `catalog` since the last call, may
    differ, so the stages after it still look at the changed services only."""
    hosts = hosts or HostKinds()
    current = catalog.services
    names = sorted(hosts.names_in(catalog))
    passed, hosts.passed = hosts.passed, (current, current)  # as answered when returned
    if not names:
        return catalog
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as pool:
        ok = dict(zip(names, pool.map(_resolves, names), strict=True))
    last_in, last_out = passed if passed is not None else (None, None)
    moved = changed_since(current, last_in)
    dropped = list(catalog.dropped)
    answer: dict[str, tuple[Instance, ...]] = {}  # the services that lose instances
    for name in sorted(hosts.named):
        keep = []
        for inst in current[name]:
            if hosts.is_ip(inst.host) or ok[inst.host]:
                keep.append(inst)
            else:
                dropped.append(Dropped(name, inst.id, f"host {inst.host!r} does not resolve"))
        if len(keep) < len(current[name]):  # else the very tuple, for the identity checks
            kept, before = tuple(keep), last_out.get(name) if last_out is not None else None
            answer[name] = before if before == kept else kept  # the last answer's, if equal
    if not answer and last_out is last_in:
        return catalog  # nothing dropped, now or the last time: the input's own lineage
    services = {**current, **answer} if answer else current
    if moved is None or last_out is None:
        out = derive(None, services, set())  # no lineage to the last answer: start one
    else:
        # Outside `moved` and the services with host names, every tuple is the input's,
        # which was the last answer's too (a service dropped from then still has names).
        maybe = moved | hosts.named
        out = derive(
            last_out, services, {n for n in maybe if services.get(n) is not last_out.get(n)}
        )
    hosts.passed = (current, out)
    return replace(catalog, services=out, dropped=tuple(dropped))
