"""etcd v3 through its JSON gateway (plain HTTP, no gRPC stack): the calls nginxgen makes.

One client for both sides: the source reads (range, watch) and the agent writes (lease
grant/keepalive/revoke, put, delete). Both get the same endpoint failover, login, TLS,
secret scrubbing and error wording.

Failover: a transport failure or a 5xx (no leader, overloaded) moves on to the next
endpoint; a 4xx is the cluster refusing the request, which another member would too.
Login: with `username`, the first call authenticates and every call carries the token;
a token etcd no longer accepts (401) is renewed once, at once.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import requests

from ..spec import EtcdRegistry
from .errors import Gone, HttpStatusError, RegistryError, printable
from .http import Http, check_tls_files, secret_value, status_detail


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with prefix (etcd's range_end)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"


def gateway_detail(r: requests.Response) -> str:
    """The gateway's own message ({"error": ..., "code": 5, "message": ...}) when it sent
    one, else the start of the body."""
    try:
        data = r.json()
    except ValueError:
        return status_detail(r)
    message = data.get("message") or data.get("error") if isinstance(data, dict) else None
    return printable(str(message))[:200] if message else status_detail(r)


class EtcdClient:
    def __init__(self, config: EtcdRegistry) -> None:
        self.config = config
        self.endpoints = list(config.all_endpoints)
        self.current = 0
        self.http = Http(
            "etcd",
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            tls=config.tls,
            detail=gateway_detail,
        )
        check_tls_files(config.tls, self.where())
        self.password: str | None = None
        if config.username:
            self.password = secret_value(
                config.password, config.password_env, "password", self.where()
            )
            if self.password:
                self.http.secrets.append(self.password)
        self._token: str | None = None
        self._login = threading.Lock()  # the watch thread and a read may log in at once

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current]

    def where(self) -> str:
        return f"etcd {', '.join(self.endpoints)}"

    def rotate(self) -> None:
        """Prefer the next endpoint from now on (the current one failed outside post())."""
        self.current = (self.current + 1) % len(self.endpoints)

    def fail(self, path: str, what: str) -> RegistryError:
        return self.http.fail(self.endpoint + path, what)

    # --- transport ----------------------------------------------------------------------

    def _authenticate(self, endpoint: str, stale: str | None = None) -> None:
        """Log in unless a token other than `stale` is there already."""
        if not self.config.username:
            return
        with self._login:
            if self._token is not None and self._token != stale:
                return
            url = f"{endpoint}/v3/auth/authenticate"
            r = self.http.request(
                "POST", url, json={"name": self.config.username, "password": self.password or ""}
            )
            token = self.http.json(r, url).get("token") if r.content else None
            if not isinstance(token, str) or not token:
                raise self.http.fail(url, "authentication answered without a token")
            self.http.secrets.append(token)
            self._token = token

    def post(
        self, path: str, body: dict[str, Any], *, stream: bool = False, read: float | None = None
    ) -> requests.Response:
        """POST to the current endpoint; on a transport failure or a 5xx try the others."""
        errors: list[str] = []
        for attempt in range(len(self.endpoints)):
            index = (self.current + attempt) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                r = self._post_once(endpoint, path, body, stream, read)
            except HttpStatusError as exc:
                if exc.status < 500:  # the request itself is refused: another member agrees
                    raise
                errors.append(str(exc))  # this member is unwell (no leader, overloaded)
                continue
            except RegistryError as exc:
                errors.append(str(exc))
                continue
            self.current = index
            return r
        if len(errors) == 1:
            raise RegistryError(errors[0])
        raise RegistryError(f"{self.where()}: every endpoint failed; last: {errors[-1]}")

    def _post_once(
        self, endpoint: str, path: str, body: dict[str, Any], stream: bool, read: float | None
    ) -> requests.Response:
        self._authenticate(endpoint)
        for attempt in range(2):
            token = self._token
            headers = {"Authorization": token} if token else {}
            r = self.http.request(
                "POST",
                endpoint + path,
                json=body,
                headers=headers,
                stream=stream,
                read_timeout=read,
                ok=(200, 401),
            )
            if r.status_code == 200:
                return r
            r.close()
            if not token or attempt:
                break
            self._authenticate(endpoint, stale=token)  # the token expired: log in again once
        raise HttpStatusError(
            str(self.http.fail(endpoint + path, "HTTP 401 (check username/password)")), 401
        )

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One unary call; the JSON answer (the `result` of a streaming call's first answer)."""
        r = self.post(path, body)
        data = self.http.json(r, self.endpoint + path)
        if not isinstance(data, dict):
            raise self.fail(path, f"unexpected answer {printable(str(data))[:80]!r}")
        if "error" in data:  # a streaming call reports errors inside a 200 answer
            raise self.fail(path, printable(str(data.get("message") or data["error"]))[:200])
        result = data.get("result", data)
        return result if isinstance(result, dict) else {}

    # --- kv -----------------------------------------------------------------------------

    def range(self, key: bytes, range_end: bytes | None = None) -> dict[str, Any]:
        body = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        return self.call("/v3/kv/range", body)

    def put(self, key: bytes, value: bytes, lease: str | None = None) -> None:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease is not None:
            body["lease"] = lease
        try:
            self.call("/v3/kv/put", body)
        except HttpStatusError as exc:
            if exc.status == 404 and "lease not found" in exc.detail:
                raise Gone(str(exc)) from None
            raise

    def delete(self, key: bytes) -> None:
        self.call("/v3/kv/deleterange", {"key": b64(key)})

    # --- leases -------------------------------------------------------------------------

    def grant(self, ttl: int) -> str:
        lease = self.call("/v3/lease/grant", {"TTL": ttl, "ID": 0}).get("ID")
        if not isinstance(lease, str) or not lease.isdigit():
            raise self.fail("/v3/lease/grant", "lease grant returned no lease id")
        return lease

    def keepalive(self, lease: str) -> None:
        """Refresh the lease. Raises Gone when it has expired or never existed."""
        answer = self.call("/v3/lease/keepalive", {"ID": lease})
        # An expired or unknown lease is answered with TTL 0 (omitted) or -1, not an error.
        if int(answer.get("TTL") or 0) <= 0:
            raise Gone(f"etcd {self.endpoint}: lease {lease} has expired")

    def revoke(self, lease: str) -> None:
        """Drop the lease and its keys; one that is gone already is fine."""
        try:
            self.call("/v3/lease/revoke", {"ID": lease})
        except HttpStatusError as exc:
            if exc.status != 404:
                raise

    # --- watch --------------------------------------------------------------------------

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int, idle: float
    ) -> requests.Response:
        """Open a watch stream; the caller reads its lines (one JSON answer each)."""
        create = {
            "create_request": {
                "key": b64(key),
                "range_end": b64(range_end),
                "start_revision": str(start_revision),
            }
        }
        return self.post("/v3/watch", create, stream=True, read=idle)

    def close(self) -> None:
        self.http.close()
