"""Nacos: /nacos/v1/ns/instance/list per service (all instances, healthy or not), polled.

healthy=false → down, enabled=false → draining, weight 0 → draining (Nacos sends no
traffic there). Fractional weights are rounded (minimum 1). Metadata may override
state / weight / registered_at, as with every registry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..model.catalog import Catalog
from ..model.validate import CatalogBuilder
from ..registry.http import Http, secret_value
from ..spec import NacosRegistry
from .poll import poll_until_changed
from .states import meta_overrides, worst

PAGE = 500
# 5 million service names: beyond that the server is not paging, it is looping.
MAX_PAGES = 10_000


def add_hosts(builder: CatalogBuilder, name: str, hosts: list[Any]) -> None:
    if builder.service(name) is None:
        return
    for n, host in enumerate(hosts):
        if not isinstance(host, dict):
            builder.drop(name, f"#{n}", "host entry is not an object")
            continue
        ip, port = host.get("ip"), host.get("port")
        cluster = host.get("clusterName")
        # instanceId holds '#' (10.0.0.1#8080#DEFAULT#DEFAULT_GROUP@@svc), which the catalog
        # refuses in ids; ip:port (with the cluster when not the default) is unique per service.
        inst_id = f"{ip}:{port}" if cluster in (None, "", "DEFAULT") else f"{cluster}/{ip}:{port}"
        meta = host.get("metadata") or None
        over = meta_overrides(meta)
        state = "up"
        if host.get("healthy") is False:
            state = "down"
        elif host.get("enabled") is False:
            state = "draining"
        weight = over.get("weight", host.get("weight"))
        if isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight == 0:
            state, weight = worst(state, "draining"), 1
        builder.add(
            name,
            id=inst_id,
            host=ip,
            port=port,
            weight=weight,
            state=worst(state, over.get("state")),
            registered_at=over.get("registered_at"),
            meta=meta,
        )


class NacosSource:
    def __init__(self, config: NacosRegistry, services: Sequence[str] = ()) -> None:
        self.config = config
        self.http = Http(
            "nacos",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            tls=config.tls,
        )
        self._token: str | None = None
        self._token_until = 0.0

    def _login(self) -> dict[str, str]:
        """accessToken for every request when the server has auth on (username given)."""
        if not self.config.username:
            return {}
        if self._token and time.monotonic() < self._token_until:
            return {"accessToken": self._token}
        url = f"{self.config.url}/nacos/v1/auth/login"
        password = secret_value(
            self.config.password, self.config.password_env, "password", f"nacos {url}"
        )
        if password:
            self.http.secrets.append(password)
        r = self.http.request(
            "POST", url, data={"username": self.config.username, "password": password or ""}
        )
        data = self.http.json(r, url)
        token = data.get("accessToken") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise self.http.fail(url, "login answered without an accessToken")
        self.http.secrets.append(token)
        ttl = data.get("tokenTtl")
        ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else 18000.0
        self._token, self._token_until = token, time.monotonic() + ttl * 0.9
        return {"accessToken": token}

    def _params(self) -> dict[str, str]:
        params = {"groupName": self.config.group, **self._login()}
        if self.config.namespace:
            params["namespaceId"] = self.config.namespace
        return params

    def _names(self) -> list[str]:
        if self.config.services is not None:
            return list(self.config.services)
        url = f"{self.config.url}/nacos/v1/ns/service/list"
        names: set[str] = set()
        previous: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            params = {**self._params(), "pageNo": str(page), "pageSize": str(PAGE)}
            data = self.http.json(self.http.request("GET", url, params=params), url)
            doms = data.get("doms") if isinstance(data, dict) else None
            if not isinstance(doms, list) or not all(isinstance(d, str) for d in doms):
                raise self.http.fail(url, "expected {count, doms: [names]}")
            if doms and set(doms) <= names:
                # A server that ignores pageNo answers page 1 forever.
                same = (
                    f"the same services as page {page - 1}"
                    if doms == previous
                    else "only services from earlier pages"
                )
                raise self.http.fail(url, f"page {page} lists {same}; the server ignores pageNo")
            names.update(doms)
            previous = doms
            count = data.get("count")
            if len(doms) < PAGE or (type(count) is int and len(names) >= count):
                return sorted(names)
        raise self.http.fail(url, f"more than {MAX_PAGES} pages of services; giving up")

    def read(self) -> Catalog:
        builder = CatalogBuilder(f"nacos:{self.config.url}")
        url = f"{self.config.url}/nacos/v1/ns/instance/list"
        for name in self._names():
            params = {**self._params(), "serviceName": name, "healthyOnly": "false"}
            data = self.http.json(self.http.request("GET", url, params=params), url)
            hosts = data.get("hosts") if isinstance(data, dict) else None
            if not isinstance(hosts, list):
                raise self.http.fail(url, f"service {name!r}: answer has no hosts list")
            add_hosts(builder, name, hosts)
        catalog = builder.build()
        return replace(catalog, version=catalog.fingerprint())

    def wait(self, version: str, timeout: float) -> bool:
        return poll_until_changed(self.read, version, timeout, self.config.poll)

    def close(self) -> None:
        self.http.close()
