"""In-process stand-ins for registries this machine cannot run (Consul, Nacos, Eureka).

Each answers with payloads shaped like the project's documented API responses. They are
deliberately small: a route table of handlers, a request log, and switches for failures
(`fail_with` an HTTP status, `garbage` bodies, `delay` for timeouts).
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.conftest import free_port
from tests.tls import TlsFiles

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
    def __init__(self) -> None:
        self.port = free_port()
        self.routes: list[tuple[str, str, Handler]] = []  # method, path prefix, handler
        self.log: list[Request] = []
        self.fail_with: int | None = None
        self.garbage = False
        self.delay = 0.0
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def route(self, method: str, prefix: str, handler: Handler) -> None:
        self.routes.append((method, prefix, handler))

    def start(self, tls: TlsFiles | None = None) -> FakeServer:
        """Serve on the port; with `tls`, https only for clients with a certificate from
        tls.ca."""
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
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                req = Request(
                    self.command,
                    parts.path,
                    query,
                    dict(self.headers.items()),
                    self.rfile.read(length) if length else b"",
                )
                fake.log.append(req)
                if fake.delay:
                    time.sleep(fake.delay)
                status, headers, body = 404, {}, {"error": "no route"}
                for method, prefix, handler in fake.routes:
                    if method == self.command and parts.path.startswith(prefix):
                        status, headers, body = handler(req)
                        break
                if fake.fail_with:
                    status, body = fake.fail_with, b"rpc error: internal failure"
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                if fake.garbage and status == 200:
                    data = b'{"truncated": [1, 2'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = do_DELETE = _do

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.tls = tls
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


def closed_port_url() -> str:
    """A loopback URL where nothing listens: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


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
    """Consul's catalog and health endpoints with blocking queries, and the local agent's
    service API (what `nginxgen agent` calls).

    `set(service, entries)` bumps the Raft index; a GET with ?index=N&wait=Ds hangs until
    that service's index passes N or the wait elapses, then answers with X-Consul-Index.

    The agent API keeps `agents[service id]` = {"name", "body", "check", "maintenance"}
    and syncs each change into the catalog the way a real agent's anti-entropy does:
    after `catalog_lag` seconds (0: at once). Its answers are Consul's: an empty 200, or
    404 `Unknown check ID "service:<id>"` for a service it does not know.
    """

    def __init__(self) -> None:
        super().__init__()
        self.index = 10
        self.services: dict[str, list[dict[str, Any]]] = {}
        self.service_index: dict[str, int] = {}
        self.index_override: int | None = None  # force a header value (reset tests)
        self.cond = threading.Condition()
        self.agents: dict[str, dict[str, Any]] = {}
        self.catalog_lag = 0.0
        self.route("GET", "/v1/catalog/services", self._catalog)
        self.route("GET", "/v1/health/service/", self._health)
        self.route("PUT", "/v1/agent/", self._agent)

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

    # --- the local agent's API ---------------------------------------------------------

    def agent_calls(self) -> list[Request]:
        return [r for r in self.log if r.path.startswith("/v1/agent/")]

    def paths(self) -> list[str]:
        return [unquote(r.path) for r in self.agent_calls()]

    def forget(self) -> None:
        """What a restarted Consul agent without persisted state does."""
        with self.cond:
            names = {a["name"] for a in self.agents.values()}
            self.agents.clear()
        for name in names:
            self._sync(name)

    def _agent(self, req: Request) -> Answer:
        if self.fail_with:  # a broken agent changes nothing
            return self.fail_with, {}, b"No cluster leader"
        path = unquote(req.path)
        with self.cond:
            if path == "/v1/agent/service/register":
                body = json.loads(req.body)
                self.agents[body["ID"]] = {
                    "name": body["Name"],
                    "body": body,
                    "check": "critical",  # a TTL check starts critical
                    "maintenance": False,
                }
                name = body["Name"]
            else:
                verb, _, sid = path.removeprefix("/v1/agent/").rpartition("/")
                sid = sid.removeprefix("service:")
                agent = self.agents.get(sid)
                if agent is None:
                    what = "check" if verb.startswith("check/") else "service"
                    unknown = f"service:{sid}" if what == "check" else sid
                    return 404, {}, f'Unknown {what} ID "{unknown}"'.encode()
                name = agent["name"]
                statuses = {"pass": "passing", "warn": "warning", "fail": "critical"}
                if verb.startswith("check/") and verb[6:] in statuses:
                    agent["check"] = statuses[verb[6:]]
                elif verb == "service/maintenance":
                    agent["maintenance"] = req.query.get("enable") == "true"
                elif verb == "service/deregister":
                    del self.agents[sid]
                else:
                    return 404, {}, b"no such agent endpoint"
        self._sync(name)
        return 200, {}, b""

    def _sync(self, name: str) -> None:
        """The catalog gets the agent's services named `name` as they are now, after
        `catalog_lag` seconds."""
        entries = self._entries(name)
        if self.catalog_lag > 0:
            threading.Timer(self.catalog_lag, self.set, (name, entries)).start()
        else:
            self.set(name, entries)

    def _entries(self, name: str) -> list[dict[str, Any]]:
        with self.cond:
            entries = []
            for sid, agent in sorted(self.agents.items()):
                if agent["name"] != name:
                    continue
                body = agent["body"]
                weights = body.get("Weights") or {"Passing": 1, "Warning": 1}
                entry = consul_entry(
                    name,
                    sid,
                    body.get("Address", ""),
                    body.get("Port", 0),
                    checks=(agent["check"],),
                    weights=(weights["Passing"], weights["Warning"]),
                    tags=tuple(body.get("Tags") or ()),
                    meta=body.get("Meta") or {},
                )
                if agent["maintenance"]:
                    check = consul_check("node-1", f"_service_maintenance:{sid}", "critical", sid)
                    entry["Checks"].append(check)
                entries.append(entry)
        return entries


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
