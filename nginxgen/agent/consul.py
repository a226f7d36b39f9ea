"""Register one instance with the local Consul agent and keep its TTL check passing.

Consul's own vocabulary carries the states: a passing TTL check is `up`, a failed one
(`/v1/agent/check/fail`) is `down`, service maintenance mode is `draining` (the readers map
`_service_maintenance:<id>` to draining). `registered_at` and the weight travel in Meta.
If the agent stops heartbeating, the check turns critical after the TTL (no traffic) and
Consul removes the service after `DeregisterCriticalServiceAfter` (Consul's minimum: 1m).
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

import requests

from ..catalog import split_address
from ..spec import ConsulRegistry
from .base import DOWN, DRAINING, LeaseLost, Record, RegistryDown, http_reason

DEREGISTER_AFTER = "1m"  # Consul reaps critical services no sooner than one minute
_GONE = re.compile(r"Unknown (check|service)|does not have associated TTL", re.I)


class ConsulRegistrar:
    def __init__(self, config: ConsulRegistry, service: str, instance_id: str, ttl: float) -> None:
        self.config = config
        self.service_id = instance_id
        self.check_id = f"service:{instance_id}"
        self.ttl = f"{max(1, round(ttl))}s"
        self.http = requests.Session()
        self.http.trust_env = False
        token = config.token.get_secret_value() if config.token else None
        token = token or os.environ.get(config.token_env)
        if token:
            self.http.headers["X-Consul-Token"] = token
        self.name = f"consul {config.url}"
        self._maintenance = False

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.config.url + path
        try:
            r = self.http.request(
                method,
                url,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
                **kwargs,
            )
        except requests.RequestException as exc:
            raise RegistryDown(f"consul {url.split('?')[0]}: {http_reason(exc)}") from None
        if r.status_code == 404 or (r.status_code == 500 and _GONE.search(r.text)):
            # The Consul agent restarted or lost our registration: register again.
            # (Newer Consul answers 404 "Unknown check ID"; older ones 500 with the text.)
            raise LeaseLost(f"consul {path.split('?')[0]}: {r.text.strip()[:120]}")
        if r.status_code >= 400:
            text = r.text.strip().splitlines()[0][:160] if r.text.strip() else ""
            raise RegistryDown(f"consul {url.split('?')[0]}: HTTP {r.status_code} {text}")
        return r

    def register(self, record: Record) -> None:
        host, port = split_address(record.address)
        meta = {**dict(record.meta), "registered_at": record.registered_at_iso}
        meta["weight"] = str(record.weight)
        payload = {
            "ID": self.service_id,
            "Name": record.service,
            "Address": host,
            "Port": port,
            "Tags": list(record.tags),
            "Meta": meta,
            "Weights": {"Passing": record.weight, "Warning": 1},
            "Check": {
                "CheckID": self.check_id,
                "Name": f"nginxgen agent heartbeat for {self.service_id}",
                "TTL": self.ttl,
                "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
            },
        }
        self._call("PUT", "/v1/agent/service/register", json=payload)
        self._maintenance = False
        self.update(record)

    def update(self, record: Record) -> None:
        draining = record.state == DRAINING
        if draining != self._maintenance:
            enable = "true" if draining else "false"
            reason = quote("nginxgen agent: draining before shutdown")
            self._call(
                "PUT",
                f"/v1/agent/service/maintenance/{quote(self.service_id, safe='')}"
                f"?enable={enable}&reason={reason}",
            )
            self._maintenance = draining
        self.heartbeat(record)

    def heartbeat(self, record: Record) -> None:
        verb, note = ("fail", "health URL failing") if record.state == DOWN else ("pass", "")
        self._call(
            "PUT",
            f"/v1/agent/check/{verb}/{quote(self.check_id, safe=':')}",
            params={"note": note} if note else None,
        )

    def deregister(self) -> None:
        try:
            self._call("PUT", f"/v1/agent/service/deregister/{quote(self.service_id, safe='')}")
        except LeaseLost:
            pass  # already gone

    def close(self) -> None:
        self.http.close()
