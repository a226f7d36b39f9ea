"""EndpointSlices → catalog instances: which port, which state, which endpoint is which.

Pure functions; the Kubernetes source (kubernetes.py) calls them on its store of slices.

Per endpoint, for the one port chosen by name (`ports.<service>`, else `port`, else the
slice's only port): `serving` and not `terminating` → up; `serving` and `terminating` →
draining (no new requests, in-flight ones finish); not `serving` → not in the catalog. A
missing `serving` falls back to `ready`, and a missing `ready` counts as ready, as the API
documents for older clusters. An endpoint listed in two slices (the controller moves
endpoints between slices; a dual-stack Service has a slice per address family) is kept
once: in its most available state, IPv4 before IPv6. The instance id is the pod's name
(targetRef), else `address:port`; nodeName, zone and the pod name are meta.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..model.validate import CatalogBuilder
from ..registry.kubernetes import SERVICE_NAME_LABEL
from ..spec import KubernetesRegistry

ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
_RANK = {"up": 0, "draining": 1}  # which copy of an endpoint listed twice wins


def endpoint_state(conditions: Any) -> str | None:
    """up, draining, or None (not serving). Raises ValueError when malformed."""
    if conditions is None:
        conditions = {}
    if not isinstance(conditions, dict):
        raise ValueError("conditions is not an object")

    def flag(key: str) -> bool | None:
        value = conditions.get(key)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"conditions.{key} is not a boolean: {value!r}")
        return value

    ready, serving, terminating = flag("ready"), flag("serving"), flag("terminating")
    if serving is None:  # clusters before 1.20 (serving) report only ready
        serving = ready is not False
    if not serving:
        return None
    return "draining" if terminating else "up"


def choose_port(ports: Any, wanted: str | None) -> Any:
    """The port number of the named port (or of the only one). Raises ValueError."""
    if not ports:
        raise ValueError("the slice lists no ports")
    if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
        raise ValueError("ports is not a list of objects")
    names = [p.get("name") or "" for p in ports]
    if wanted is None:
        if len(ports) > 1:
            listed = ", ".join(repr(n) for n in names[:8])
            raise ValueError(
                f"the slice has ports {listed}: choose one with registry.port or registry.ports"
            )
        chosen = ports[0]
    else:
        found = [p for p, n in zip(ports, names, strict=True) if n == wanted]
        if not found:
            listed = ", ".join(repr(n) for n in names[:8])
            raise ValueError(f"no port named {wanted!r} (the slice has {listed})")
        chosen = found[0]
    name, protocol = chosen.get("name") or "", chosen.get("protocol") or "TCP"
    if protocol != "TCP":
        raise ValueError(f"port {name!r} is {protocol!r}, not TCP")
    if chosen.get("port") is None:
        raise ValueError(f"port {name!r} has no number")
    return chosen["port"]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def add_slices(builder: CatalogBuilder, slices: Iterable[Any], config: KubernetesRegistry) -> None:
    """The endpoints of these EndpointSlices → instances (or drops, each with its reason)."""
    best: dict[str, dict[str, tuple[tuple[int, int, str], dict[str, Any]]]] = {}
    for n, obj in enumerate(slices):
        if not isinstance(obj, dict):
            builder.drop("?", f"#{n}", "EndpointSlice is not an object")
            continue
        meta = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        where = f"slice {_text(meta.get('name')) or f'#{n}'}"
        labels = meta["labels"] if isinstance(meta.get("labels"), dict) else {}
        service = _text(labels.get(SERVICE_NAME_LABEL))
        if service is None:
            builder.drop("?", where, f"EndpointSlice has no {SERVICE_NAME_LABEL} label")
            continue
        if builder.service(service) is None:
            continue
        if obj.get("addressType") not in ADDRESS_TYPES:
            why = f"addressType {obj.get('addressType')!r} is not IPv4, IPv6 or FQDN"
            builder.drop(service, where, why)
            continue
        try:
            port = choose_port(obj.get("ports"), config.ports.get(service, config.port))
        except ValueError as exc:
            builder.drop(service, where, str(exc))
            continue
        endpoints = obj.get("endpoints") or []
        if not isinstance(endpoints, list):
            builder.drop(service, where, "endpoints is not a list")
            continue
        kept = best.setdefault(service, {})
        for m, ep in enumerate(endpoints):
            at = f"{where} endpoint #{m}"
            if not isinstance(ep, dict):
                builder.drop(service, at, "endpoint is not an object")
                continue
            addresses = ep.get("addresses")
            if not isinstance(addresses, list) or not addresses:
                builder.drop(service, at, "endpoint has no addresses")
                continue
            try:
                state = endpoint_state(ep.get("conditions"))
            except ValueError as exc:
                builder.drop(service, at, str(exc))
                continue
            if state is None:
                continue  # not serving: out of rotation, like a pod that is not ready
            target = ep["targetRef"] if isinstance(ep.get("targetRef"), dict) else {}
            pod = _text(target.get("name")) if target.get("kind") == "Pod" else None
            # Addresses are fungible; the API lets consumers use the first.
            address = addresses[0]
            inst_id = pod or f"{address}:{port}"
            meta_out = {"node": ep.get("nodeName"), "zone": ep.get("zone"), "pod": pod}
            fields = {
                "id": inst_id,
                "host": address,
                "port": port,
                "state": state,
                "meta": {k: v for k, v in meta_out.items() if isinstance(v, str) and v},
            }
            # Listed twice: the more available copy wins, then IPv4 over IPv6 (a
            # dual-stack Service has one slice per family), then the slice name.
            rank = (_RANK[state], ADDRESS_TYPES.index(obj["addressType"]), where)
            if inst_id not in kept or rank < kept[inst_id][0]:
                kept[inst_id] = (rank, fields)
    for service, instances in best.items():
        for _, fields in sorted(instances.values(), key=lambda t: t[0]):
            builder.add(service, **fields)
