"""In-process stand-ins for registries this machine cannot run (Consul, Nacos, Eureka).

Each answers with payloads shaped like the project's documented API responses, one fake
per API for every test (the sources read it, the agent writes it). They are deliberately
small: a route table of handlers, a request log, and switches for failures (`fail_with`
an HTTP status, `garbage` bodies, `delay` for timeouts); `tls` serves https and asks
clients for a certificate.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .net import closed_port_url, free_port
from .tls import TlsFiles

__all__ = ["FakeConsul", "FakeEureka", "FakeNacos", "FakeServer", "Request", "closed_port_url"]

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON-able body (or raw bytes)
Handler = Callable[["Request"], Answer]


class Request:
    def __init__(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> None:
        self.method, self.path, self.query, self.headers, self.body = (
            method,
            path,
            query,
            headers,
            body,
        )

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


class FakeServer:
    def __init__(self, tls: TlsFiles | None = None) -> None:
        self.port = free_port()
        self.tls = tls
        self.routes: list[tuple[str, str, Handler]] = []  # method, path prefix, handler
        self.log: list[Request] = []
        self.fail_with: int | None = None
        self.garbage = False
        self.delay = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def route(self, method: str, prefix: str, handler: Handler) -> None:
        self.routes.append((method, prefix, handler))

    def start(self) -> FakeServer:
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                fake._connections.add(self.connection)

            def finish(self) -> None:
                fake._connections.discard(self.connection)
                super().finish()

            def _do(self) -> None:
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(
                    self.command,
                    path,
                    query,
                    dict(self.headers.items()),
                    self.rfile.read(length) if length else b"",
                )
                fake.log.append(req)
                if fake.delay:
                    time.sleep(fake.delay)
                status, headers, body = 404, {}, {"error": "no route"}
                if fake.fail_with:  # a server in trouble answers, and changes nothing
                    status, body = fake.fail_with, b"rpc error: internal failure"
                else:
                    for method, prefix, handler in fake.routes:
                        if method == self.command and path.startswith(prefix):
                            status, headers, body = handler(req)
                            break
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                if fake.garbage and status == 200:
                    data = b'{"truncated": [1, 2'
                try:
                    self.send_response(status)
                    headers = {"Content-Type": "application/json", **headers}
                    headers["Content-Length"] = str(len(data))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = do_DELETE = _do

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self._server.daemon_threads = True
        if self.tls is not None:  # https, and only for clients with a certificate from tls.ca
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.tls.ca))
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(str(self.tls.server_cert), str(self.tls.server_key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop like a dead process: the listener and every open connection go away."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --- Consul ---------------------------------------------------------------------------


def consul_check(node: str, check_id: str, status: str, service_id: str = "") -> dict[str, Any]:
    """A health check as /v1/health/service returns it."""
    names = {
        "serfHealth": "Serf Health Status",
        "_node_maintenance": "Node Maintenance Mode",
    }
    name = names.get(check_id) or (
        "Service Maintenance Mode"
        if check_id.startswith("_service_maintenance:")
        else f"Service '{service_id}' check"
    )
    return {
        "Node": node,
        "CheckID": check_id,
        "Name": name,
        "Status": status,
        "Notes": "",
        "Output": "",
        "ServiceID": service_id,
        "ServiceName": service_id.split("-")[0] if service_id else "",
        "ServiceTags": [],
        "Type": "http" if service_id else "",
        "Namespace": "default",
        "CreateIndex": 10,
        "ModifyIndex": 10,
    }


def consul_entry(
    service: str,
    sid: str,
    address: str,
    port: int,
    *,
    node: str = "node-1",
    node_address: str = "10.0.0.1",
    checks: tuple[str, ...] = ("passing",),
    node_checks: tuple[tuple[str, str], ...] = (("serfHealth", "passing"),),
    weights: tuple[int, int] = (1, 1),
    tags: tuple[str, ...] = (),
    meta: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One element of GET /v1/health/service/:service, as in Consul's API docs."""
    return {
        "Node": {
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": node,
            "Address": node_address,
            "Datacenter": "dc1",
            "TaggedAddresses": {"lan": node_address, "wan": node_address},
            "Meta": {"instance_type": "t2.medium"},
        },
        "Service": {
            "ID": sid,
            "Service": service,
            "Tags": list(tags),
            "Address": address,
            "TaggedAddresses": {},
            "Meta": meta or {},
            "Port": port,
            "Weights": {"Passing": weights[0], "Warning": weights[1]},
            "Namespace": "default",
        },
        "Checks": [consul_check(node, cid, st) for cid, st in node_checks]
        + [consul_check(node, f"service:{sid}", st, sid) for st in checks],
    }


class FakeConsul(FakeServer):
    """Consul's HTTP API: the catalog and health reads (with blocking queries) the source
    makes, and the agent endpoints `nginxgen agent` calls.

    `set(service, entries)` bumps the Raft index; a GET with ?index=N&wait=Ds hangs until
    that service's index passes N or the wait elapses, then answers with X-Consul-Index.

    The agent endpoints answer as Consul's docs say (PUT, empty 200 body; 404 "Unknown
    check ID" for a check the agent no longer knows). `registered` is what the local agent
    holds (ID → check status and maintenance), and a registered service shows in the
    health reads with its TTL check (and maintenance check), as in Consul.
    """

    def __init__(self, tls: TlsFiles | None = None) -> None:
        super().__init__(tls)
        self.index = 10
        self.services: dict[str, list[dict[str, Any]]] = {}
        self.service_index: dict[str, int] = {}
        self.index_override: int | None = None  # force a header value (reset tests)
        self.cond = threading.Condition()
        self.registered: dict[str, dict[str, Any]] = {}  # what the local agent holds
        self.route("GET", "/v1/catalog/services", self._catalog)
        self.route("GET", "/v1/health/service/", self._health)
        self.route("PUT", "/v1/agent/", self._agent)
        # The KV store (split overrides): blocking reads with ?recurse, PUT, DELETE. Until
        # a key is first written it answers 404 without an index (a real Consul sends
        # one): the other fakes' tests keep the versions they assert.
        self.kv: dict[str, bytes] = {}
        self.kv_index = 0
        self.route("GET", "/v1/kv/", self._kv_get)
        self.route("PUT", "/v1/kv/", self._kv_put)
        self.route("DELETE", "/v1/kv/", self._kv_put)

    @property
    def broken(self) -> bool:
        """Answer 500 to everything, like a Consul without a leader."""
        return self.fail_with == 500

    @broken.setter
    def broken(self, value: bool) -> None:
        self.fail_with = 500 if value else None

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every agent call: path, query, JSON body, token."""
        return [
            {
                "path": r.path,
                "query": r.query,
                "body": json.loads(r.body) if r.body else None,
                "token": r.headers.get("X-Consul-Token"),
            }
            for r in list(self.log)
            if r.method == "PUT"
        ]

    def paths(self) -> list[str]:
        return [c["path"] for c in self.calls]

    def forget(self) -> None:
        """What a restarted Consul agent without persisted state does."""
        with self.cond:
            names = {r["payload"]["Name"] for r in self.registered.values()}
            self.registered.clear()
        for name in names:
            self._publish(name)

    def _agent(self, req: Request) -> Answer:
        with self.cond:
            status, text, service = self._agent_call(req)
        if service is not None:
            self._publish(service)
        return status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode()

    def _agent_call(self, req: Request) -> tuple[int, str, str | None]:
        path = req.path
        if path == "/v1/agent/service/register":
            payload = json.loads(req.body)
            self.registered[payload["ID"]] = {
                "maintenance": False,
                "check": "critical",
                "payload": payload,
            }
            return 200, "", payload["Name"]
        for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
            prefix = f"/v1/agent/check/{verb}/service:"
            if path.startswith(prefix):
                sid = path[len(prefix) :]
                if sid not in self.registered:
                    return 404, f'Unknown check ID "service:{sid}"', None
                self.registered[sid]["check"] = status
                return 200, "", self.registered[sid]["payload"]["Name"]
        if path.startswith("/v1/agent/service/maintenance/"):
            sid = path.rsplit("/", 1)[1]
            if sid not in self.registered:
                return 404, f'Unknown service ID "{sid}"', None
            self.registered[sid]["maintenance"] = req.query.get("enable") == "true"
            return 200, "", self.registered[sid]["payload"]["Name"]
        if path.startswith("/v1/agent/service/deregister/"):
            sid = path.rsplit("/", 1)[1]
            gone = self.registered.pop(sid, None)
            if gone is None:
                return 404, f'Unknown service ID "{sid}"', None
            return 200, "", gone["payload"]["Name"]
        return 404, "not found", None

    def _kv_get(self, req: Request) -> Answer:
        prefix = req.path.removeprefix("/v1/kv/")
        self._block(req, lambda: self.kv_index)
        with self.cond:
            if not self.kv_index:
                return 404, {}, b""
            entries = [
                {"Key": k, "Value": base64.b64encode(v).decode(), "ModifyIndex": self.kv_index}
                for k, v in sorted(self.kv.items())
                if k.startswith(prefix)
            ]
            return (200 if entries else 404), self._header(self.kv_index), entries or b""

    def _kv_put(self, req: Request) -> Answer:
        key = req.path.removeprefix("/v1/kv/")
        with self.cond:
            self.index += 1
            self.kv_index = self.index
            if req.method == "DELETE":
                self.kv.pop(key, None)
            else:
                self.kv[key] = req.body
            self.cond.notify_all()
        return 200, {}, b"true"

    def _publish(self, service: str) -> None:
        """The health entries of the agent's registrations of `service`."""
        with self.cond:
            entries = []
            for sid, reg in self.registered.items():
                p = reg["payload"]
                if p["Name"] != service:
                    continue
                entry = consul_entry(
                    service,
                    sid,
                    p["Address"],
                    p["Port"],
                    checks=(reg["check"],),
                    weights=(p["Weights"]["Passing"], p["Weights"]["Warning"]),
                    tags=tuple(p.get("Tags") or ()),
                    meta=p.get("Meta") or {},
                )
                if reg["maintenance"]:
                    check = consul_check("node-1", f"_service_maintenance:{sid}", "critical", sid)
                    entry["Checks"].append(check)
                entries.append(entry)
        self.set(service, entries)

    def set(self, service: str, entries: list[dict[str, Any]]) -> None:
        with self.cond:
            self.index += 1
            self.services[service] = entries
            self.service_index[service] = self.index
            self.cond.notify_all()

    def _block(self, req: Request, current: Callable[[], int]) -> None:
        if "index" not in req.query:
            return
        wanted = int(req.query["index"])
        wait = req.query.get("wait", "300s")
        seconds = float(wait[:-1]) * (60 if wait.endswith("m") else 1)
        with self.cond:
            self.cond.wait_for(lambda: current() > wanted, timeout=seconds)

    def _header(self, index: int) -> dict[str, str]:
        value = self.index_override if self.index_override is not None else index
        return {
            "X-Consul-Index": str(value),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
        }

    def _catalog(self, req: Request) -> Answer:
        self._block(req, lambda: self.index)
        with self.cond:
            body = {
                name: sorted({t for e in entries for t in e.get("Service", {}).get("Tags", [])})
                for name, entries in self.services.items()
            }
            return 200, self._header(self.index), body

    def _health(self, req: Request) -> Answer:
        name = req.path.removeprefix("/v1/health/service/")
        self._block(req, lambda: self.service_index.get(name, 1))
        with self.cond:
            entries = self.services.get(name, [])
            if "tag" in req.query:
                entries = [e for e in entries if req.query["tag"] in e["Service"]["Tags"]]
            return 200, self._header(self.service_index.get(name, 1)), entries


# --- Nacos ----------------------------------------------------------------------------


def nacos_host(
    ip: str,
    port: Any,
    service: str,
    *,
    weight: Any = 1.0,
    healthy: bool = True,
    enabled: bool = True,
    cluster: str = "DEFAULT",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One element of `hosts` in GET /nacos/v1/ns/instance/list (Nacos Open API)."""
    return {
        "instanceId": f"{ip}#{port}#{cluster}#DEFAULT_GROUP@@{service}",
        "ip": ip,
        "port": port,
        "weight": weight,
        "healthy": healthy,
        "enabled": enabled,
        "ephemeral": True,
        "clusterName": cluster,
        "serviceName": f"DEFAULT_GROUP@@{service}",
        "metadata": metadata or {},
        "instanceHeartBeatInterval": 5000,
        "instanceIdGenerator": "simple",
        "instanceHeartBeatTimeOut": 15000,
        "ipDeleteTimeout": 30000,
    }


class FakeNacos(FakeServer):
    """Nacos naming: instance list, service list, and optional login for an accessToken."""

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        super().__init__()
        self.services: dict[str, list[dict[str, Any]]] = {}
        self.username, self.password = username, password
        self.token = "eyJhbGciOiJIUzI1NiJ9.fake-access-token"
        # Some servers (old versions, proxies that drop the query) answer page 1 to every
        # pageNo; set to replay one.
        self.ignore_page_no = False
        self.route("POST", "/nacos/v1/auth/login", self._login)
        self.route("GET", "/nacos/v1/ns/instance/list", self._instances)
        self.route("GET", "/nacos/v1/ns/service/list", self._service_list)

    def _authorized(self, req: Request) -> bool:
        return self.username is None or req.query.get("accessToken") == self.token

    def _login(self, req: Request) -> Answer:
        form = req.form()
        if (form.get("username"), form.get("password")) != (self.username, self.password):
            return 403, {}, b"unknown user!"
        return 200, {}, {"accessToken": self.token, "tokenTtl": 18000, "globalAdmin": True}

    def _instances(self, req: Request) -> Answer:
        if not self._authorized(req):
            return 403, {}, b"user not found!"
        name = req.query.get("serviceName", "")
        group = req.query.get("groupName", "DEFAULT_GROUP")
        return (
            200,
            {},
            {
                "name": f"{group}@@{name}",
                "groupName": group,
                "clusters": "",
                "cacheMillis": 10000,
                "hosts": self.services.get(name, []),
                "lastRefTime": int(time.time() * 1000),  # ticks on every read
                "checksum": "",
                "allIPs": False,
                "reachProtectionThreshold": False,
                "valid": True,
            },
        )

    def _service_list(self, req: Request) -> Answer:
        if not self._authorized(req):
            return 403, {}, b"user not found!"
        # Nacos pages the names (pageNo from 1, pageSize) and counts them all in `count`.
        size = int(req.query.get("pageSize", "20"))
        page = 1 if self.ignore_page_no else int(req.query.get("pageNo", "1"))
        names = sorted(self.services)[(page - 1) * size : page * size]
        return 200, {}, {"count": len(self.services), "doms": names}


# --- Eureka ---------------------------------------------------------------------------


def eureka_instance(
    app: str,
    ip: str,
    port: Any,
    *,
    status: str = "UP",
    port_enabled: str = "true",
    secure_enabled: str = "false",
    up_ms: int = 1_764_410_400_000,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One instance as GET /eureka/apps returns it with Accept: application/json."""
    return {
        "instanceId": f"{ip}:{app.lower()}:{port}",
        "hostName": ip,
        "app": app.upper(),
        "ipAddr": ip,
        "status": status,
        "overriddenStatus": "UNKNOWN",
        "port": {"$": port, "@enabled": port_enabled},
        "securePort": {"$": 443, "@enabled": secure_enabled},
        "countryId": 1,
        "dataCenterInfo": {
            "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
            "name": "MyOwn",
        },
        "leaseInfo": {
            "renewalIntervalInSecs": 30,
            "durationInSecs": 90,
            "registrationTimestamp": up_ms + 500,
            "lastRenewalTimestamp": int(time.time() * 1000),
            "evictionTimestamp": 0,
            "serviceUpTimestamp": up_ms,
        },
        "metadata": metadata if metadata is not None else {"management.port": str(port)},
        "homePageUrl": f"http://{ip}:{port}/",
        "statusPageUrl": f"http://{ip}:{port}/actuator/info",
        "healthCheckUrl": f"http://{ip}:{port}/actuator/health",
        "vipAddress": app.lower(),
        "secureVipAddress": app.lower(),
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": str(up_ms + 600),
        "lastDirtyTimestamp": str(up_ms + 400),
        "actionType": "ADDED",
    }


class FakeEureka(FakeServer):
    """GET /eureka/apps. `apps` maps APP → list of instances; a list of one is sent as a
    bare object, as Eureka's XML-derived JSON does."""

    def __init__(self) -> None:
        super().__init__()
        self.apps: dict[str, list[dict[str, Any]]] = {}
        self.route("GET", "/eureka/apps", self._apps)

    def _apps(self, req: Request) -> Answer:
        if "application/json" not in req.headers.get("Accept", ""):
            return 200, {"Content-Type": "application/xml"}, b"<applications/>"
        apps = [
            {"name": name, "instance": insts[0] if len(insts) == 1 else insts}
            for name, insts in sorted(self.apps.items())
        ]
        up = sum(
            1
            for insts in self.apps.values()
            for i in insts
            if isinstance(i, dict) and i.get("status") == "UP"
        )
        return (
            200,
            {},
            {
                "applications": {
                    "versions__delta": "1",
                    "apps__hashcode": f"UP_{up}_",
                    "application": apps[0] if len(apps) == 1 else apps,
                }
            },
        )
