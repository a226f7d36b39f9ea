"""Write one instance into etcd v3 through its JSON gateway (plain HTTP, no gRPC stack).

Key `<prefix><service>/<instance-id>`, value the instance as JSON, attached to a lease of
`ttl` seconds. The agent keeps the lease alive; when it stops (SIGKILL, crash, lost host)
etcd deletes the key by itself once the lease runs out.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import requests

from ..spec import EtcdRegistry
from .base import LeaseLost, Record, RegistryDown, http_reason

# gRPC status codes etcd puts in gateway errors.
_NOT_FOUND = 5
_UNAUTHENTICATED = 16


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


class EtcdRegistrar:
    def __init__(self, config: EtcdRegistry, service: str, instance_id: str, ttl: float) -> None:
        self.config = config
        self.endpoints = list(config.all_endpoints)
        self.key = f"{config.prefix}{service}/{instance_id}"
        self.ttl = max(1, round(ttl))  # etcd leases are whole seconds
        self.lease: str | None = None
        self.http = requests.Session()
        self.http.trust_env = False  # registry traffic never goes through a proxy
        self._token: str | None = None
        self.name = f"etcd {self.endpoints[0]}"

    # --- transport ----------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first endpoint that answers; rotate on connection failures."""
        last = ""
        for _ in range(len(self.endpoints)):
            url = self.endpoints[0] + path
            try:
                r = self.http.post(
                    url,
                    data=json.dumps(body),
                    headers=self._headers(),
                    timeout=(self.config.connect_timeout, self.config.read_timeout),
                )
            except requests.RequestException as exc:
                last = f"{url}: {http_reason(exc)}"
                self.endpoints.append(self.endpoints.pop(0))
                self.name = f"etcd {self.endpoints[0]}"
                continue
            return self._answer(r, url, path, body)
        raise RegistryDown(f"etcd {last}")

    def _answer(
        self, r: requests.Response, url: str, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            data = r.json()
        except ValueError:
            raise RegistryDown(f"etcd {url}: HTTP {r.status_code}, not JSON") from None
        if not isinstance(data, dict):
            raise RegistryDown(f"etcd {url}: unexpected answer {str(data)[:80]!r}")
        if "error" in data or r.status_code >= 400:
            code = data.get("code")
            message = str(data.get("message") or data.get("error") or f"HTTP {r.status_code}")
            if code == _NOT_FOUND and "lease" in message:
                raise LeaseLost(f"etcd {url}: {message}")
            if code == _UNAUTHENTICATED and self._token is not None:
                self._token = None  # expired token: authenticate again on the retry
            raise RegistryDown(f"etcd {url}: {message}")
        # Streaming calls (keepalive) wrap each answer in {"result": ...}.
        result = data.get("result", data)
        return result if isinstance(result, dict) else {}

    def _headers(self) -> dict[str, str]:
        if self.config.username is None:
            return {}
        if self._token is None:
            self._token = self._authenticate()
        return {"Authorization": self._token}

    def _authenticate(self) -> str:
        password = self.config.password.get_secret_value() if self.config.password else None
        if password is None and self.config.password_env:
            password = os.environ.get(self.config.password_env)
        url = self.endpoints[0] + "/v3/auth/authenticate"
        try:
            r = self.http.post(
                url,
                data=json.dumps({"name": self.config.username, "password": password or ""}),
                timeout=(self.config.connect_timeout, self.config.read_timeout),
            )
            data = r.json()
        except (requests.RequestException, ValueError) as exc:
            raise RegistryDown(f"etcd {url}: cannot authenticate: {http_reason(exc)}") from None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str):
            message = data.get("message") if isinstance(data, dict) else None
            who = self.config.username
            raise RegistryDown(f"etcd {url}: authentication as {who!r} failed: {message}")
        return token

    # --- Registrar ----------------------------------------------------------------------

    def register(self, record: Record) -> None:
        lease = self._call("/v3/lease/grant", {"TTL": self.ttl, "ID": 0}).get("ID")
        if not isinstance(lease, str) or not lease.isdigit():
            raise RegistryDown(f"{self.name}: lease grant returned no lease id")
        old, self.lease = self.lease, lease
        self._put(record)
        if old is not None:
            self._revoke(old)  # a lease left by an earlier registration; gone is fine

    def update(self, record: Record) -> None:
        if self.lease is None:
            raise LeaseLost("no lease yet")
        self._put(record)

    def heartbeat(self, record: Record) -> None:
        if self.lease is None:
            raise LeaseLost("no lease yet")
        answer = self._call("/v3/lease/keepalive", {"ID": self.lease})
        # An expired or unknown lease is answered with TTL 0 (omitted) or -1, not an error.
        if int(answer.get("TTL") or 0) <= 0:
            raise LeaseLost(f"{self.name}: lease {self.lease} has expired")

    def deregister(self) -> None:
        self._call("/v3/kv/deleterange", {"key": _b64(self.key)})
        if self.lease is not None:
            self._revoke(self.lease)
            self.lease = None

    def close(self) -> None:
        self.http.close()

    def _put(self, record: Record) -> None:
        value = json.dumps(record.to_json(), separators=(",", ":"))
        self._call("/v3/kv/put", {"key": _b64(self.key), "value": _b64(value), "lease": self.lease})

    def _revoke(self, lease: str) -> None:
        try:
            self._call("/v3/lease/revoke", {"ID": lease})
        except LeaseLost:
            pass
