"""Eureka: GET <url>/apps with Accept: application/json, polled (full reads).

Eureka's JSON comes from an XML mapping and shows it: `port` is {"$": 8080,
"@enabled": "true"}, numbers may be strings, and a list of one is often a bare object
(`application`, `instance`). Application names are upper case in Eureka (USERS); the
catalog uses them lower-cased, so a route says `service: users`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..model.catalog import Catalog
from ..model.validate import CatalogBuilder, shown
from ..registry.http import Http, secret_value
from ..spec import EurekaRegistry
from .poll import poll_until_changed
from .states import meta_overrides, worst

STATUS = {
    "UP": "up",
    "DOWN": "down",
    "STARTING": "starting",
    "OUT_OF_SERVICE": "draining",
    "UNKNOWN": "down",
}


def as_list(value: Any) -> list[Any]:
    """Eureka sends one element as a bare object and none as a missing key."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def enabled(port: Any) -> bool:
    return not isinstance(port, dict) or str(port.get("@enabled", "true")).lower() == "true"


def port_number(port: Any) -> Any:
    return port.get("$") if isinstance(port, dict) else port


def add_instance(builder: CatalogBuilder, name: str, n: int, inst: Any, prefer_ip: bool) -> None:
    if not isinstance(inst, dict):
        builder.drop(name, f"#{n}", "instance is not an object")
        return
    port = inst.get("port")
    # Eureka's own default id when a client sent none: host:app:port.
    inst_id = inst.get("instanceId") or f"{inst.get('hostName')}:{name}:{port_number(port)}"
    if not enabled(port):
        why = "only the secure port is enabled (nginxgen proxies plain HTTP)"
        builder.drop(name, inst_id, why if enabled(inst.get("securePort")) else "no port")
        return
    status = inst.get("status")
    state = STATUS.get(status) if isinstance(status, str) else None
    if state is None:
        builder.drop(name, inst_id, f"unknown status {shown(status)}")
        return
    raw_meta = inst.get("metadata")
    if raw_meta is not None and not isinstance(raw_meta, dict):
        builder.drop(name, inst_id, "metadata must be an object")
        return
    # "@class": "java.util.Collections$EmptyMap" is serializer noise, not metadata.
    meta = {k: v for k, v in (raw_meta or {}).items() if not str(k).startswith("@")}
    over = meta_overrides(meta)
    lease: dict[str, Any] = inst["leaseInfo"] if isinstance(inst.get("leaseInfo"), dict) else {}
    up_since = lease.get("serviceUpTimestamp")
    if isinstance(up_since, str) and up_since.isascii() and up_since.isdigit():
        up_since = int(up_since)
    host = inst.get("ipAddr") if prefer_ip else inst.get("hostName")
    builder.add(
        name,
        id=inst_id,
        host=host or inst.get("hostName") or inst.get("ipAddr"),
        port=port_number(port),
        weight=over.get("weight"),
        state=worst(state, over.get("state")),
        registered_at=over.get("registered_at") or (up_since or None),
        meta=meta or None,
    )


def parse_apps(data: Any, builder: CatalogBuilder, url: str, prefer_ip: bool) -> bool:
    """Fill builder from an /apps answer; False when the envelope is broken."""
    apps = data.get("applications") if isinstance(data, dict) else None
    if not isinstance(apps, dict):
        return False
    for app in as_list(apps.get("application")):
        if not isinstance(app, dict) or not isinstance(app.get("name"), str):
            builder.drop("?", "-", "application without a name")
            continue
        name = app["name"].lower()
        if builder.service(name) is None:
            continue
        for n, inst in enumerate(as_list(app.get("instance"))):
            add_instance(builder, name, n, inst, prefer_ip)
    return True


class EurekaSource:
    def __init__(self, config: EurekaRegistry, services: Sequence[str] = ()) -> None:
        self.config = config
        self.http = Http(
            "eureka",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            tls=config.tls,
            headers={"Accept": "application/json"},
        )
        self._auth: tuple[str, str] | None = None

    def read(self) -> Catalog:
        url = f"{self.config.url}/apps"
        if self.config.username and self._auth is None:
            password = secret_value(
                self.config.password, self.config.password_env, "password", f"eureka {url}"
            )
            if password:
                self.http.secrets.append(password)
            self._auth = (self.config.username, password or "")
        data = self.http.json(self.http.request("GET", url, auth=self._auth), url)
        builder = CatalogBuilder(f"eureka:{self.config.url}")
        if not parse_apps(data, builder, url, self.config.prefer_ip):
            raise self.http.fail(url, "answer has no 'applications' object")
        catalog = builder.build()
        return replace(catalog, version=catalog.fingerprint())

    def wait(self, version: str, timeout: float) -> bool:
        return poll_until_changed(self.read, version, timeout, self.config.poll)

    def close(self) -> None:
        self.http.close()
