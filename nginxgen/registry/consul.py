"""Consul's HTTP API: the catalog reads the source makes and the agent calls the
`nginxgen agent` makes, through one client (token, TLS, scrubbing, error wording).

Token: `registry.token`, else the variable `registry.token_env` names (default
CONSUL_HTTP_TOKEN, as Consul's own CLI). CONSUL_HTTP_TOKEN may be unset (no ACLs); any
other variable the spec names must be set.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

import requests

from ..spec import ConsulRegistry
from .errors import Gone, HttpStatusError
from .http import Http, check_tls_files, secret_value

# A Consul agent that lost our registration: newer ones answer 404 "Unknown check ID",
# older ones 500 with the same words.
_GONE = re.compile(r"Unknown (check|service)|does not have associated TTL", re.I)


def parse_index(value: str | None) -> int | None:
    """X-Consul-Index as a number; None when missing or not a number."""
    # isdigit() also takes '²' and '٨', which int() then refuses or misreads.
    if value is None or not re.fullmatch(r"[0-9]{1,20}", value.strip()):
        return None
    return int(value)


def consul_token(config: ConsulRegistry, where: str) -> str | None:
    if config.token is not None:
        return config.token.get_secret_value()
    if config.token_env != ConsulRegistry.model_fields["token_env"].default:
        return secret_value(None, config.token_env, "token", where) or None
    return os.environ.get(config.token_env) or None


class ConsulClient:
    def __init__(self, config: ConsulRegistry) -> None:
        self.config = config
        self.url = config.url
        self.http = Http(
            "consul",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            tls=config.tls,
        )
        where = f"consul {config.url}"
        check_tls_files(config.tls, where)
        token = consul_token(config, where)
        if token:
            self.http.headers["X-Consul-Token"] = token
            self.http.secrets.append(token)

    # --- catalog (the source) -----------------------------------------------------------

    def read(
        self, path: str, params: dict[str, str], read_timeout: float | None = None
    ) -> tuple[Any, int | None]:
        """GET a catalog or health endpoint: (JSON answer, X-Consul-Index or None)."""
        url = self.url + path
        query = dict(params)
        if self.config.datacenter:
            query["dc"] = self.config.datacenter
        if self.config.stale:
            query["stale"] = ""
        r = self.http.request("GET", url, params=query, read_timeout=read_timeout)
        return self.http.json(r, url), parse_index(r.headers.get("X-Consul-Index"))

    # --- the KV store (split overrides, registry/shift.py) --------------------------------

    def kv_read(
        self, prefix: str, params: dict[str, str], read_timeout: float | None = None
    ) -> tuple[list[Any], int | None]:
        """GET /v1/kv/<prefix>?recurse: the entries (none: an empty list; Consul answers
        404 with an index then), and X-Consul-Index."""
        url = f"{self.url}/v1/kv/{quote(prefix, safe='/')}"
        query = {"recurse": "", **params}
        if self.config.datacenter:
            query["dc"] = self.config.datacenter
        if self.config.stale:
            query["stale"] = ""
        r = self.http.request("GET", url, params=query, read_timeout=read_timeout, ok=(200, 404))
        data = self.http.json(r, url) if r.status_code == 200 else []
        if not isinstance(data, list):
            raise self.http.fail(url, "expected a list of KV entries")
        return data, parse_index(r.headers.get("X-Consul-Index"))

    def kv_put(self, key: str, value: bytes | None) -> None:
        """PUT (or, with None, DELETE) one key."""
        url = f"{self.url}/v1/kv/{quote(key, safe='/')}"
        params = {"dc": self.config.datacenter} if self.config.datacenter else None
        if value is None:
            self.http.request("DELETE", url, params=params)
        else:
            self.http.request("PUT", url, params=params, data=value)

    # --- the local agent (nginxgen agent) -----------------------------------------------

    def _agent(self, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.http.request("PUT", self.url + path, **kwargs)
        except HttpStatusError as exc:
            if exc.status == 404 or (exc.status == 500 and _GONE.search(exc.detail)):
                raise Gone(str(exc)) from None
            raise

    def register(self, payload: dict[str, Any]) -> None:
        self._agent("/v1/agent/service/register", json=payload)

    def check(self, verb: str, check_id: str, note: str = "") -> None:
        """TTL check update: verb is pass, warn or fail."""
        path = f"/v1/agent/check/{verb}/{quote(check_id, safe=':')}"
        self._agent(path, params={"note": note} if note else None)

    def maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        path = f"/v1/agent/service/maintenance/{quote(service_id, safe='')}"
        self._agent(path, params={"enable": "true" if enable else "false", "reason": reason})

    def deregister(self, service_id: str) -> None:
        self._agent(f"/v1/agent/service/deregister/{quote(service_id, safe='')}")

    def close(self) -> None:
        self.http.close()
