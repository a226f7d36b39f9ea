"""An in-process Kubernetes API server for EndpointSlices: no real one can run here.

It implements the documented list and watch protocol of discovery.k8s.io/v1
EndpointSlices in a namespace, with the payloads the API reference shows:

- GET /apis/discovery.k8s.io/v1/namespaces/NS/endpointslices?labelSelector=&limit=&continue=
  → an EndpointSliceList (kind, apiVersion, metadata.resourceVersion/continue, items
  without kind/apiVersion), paginated with continue tokens that expire like etcd's.
- the same with watch=true&resourceVersion=&allowWatchBookmarks=&timeoutSeconds= → 200,
  Transfer-Encoding: chunked, one JSON event per line: ADDED / MODIFIED / DELETED with the
  object, BOOKMARK with only metadata.resourceVersion, ERROR with a Status (code 410,
  reason Expired) when the resourceVersion is older than the history kept. An object that
  stops matching the selector arrives as DELETED, one that starts matching as ADDED.
- a resourceVersion older than the kept history answered as HTTP 410 (`expire_as="http"`)
  or as a first ERROR event (`"event"`); both happen in real clusters.
- bearer tokens (401 with a Status when wrong), 403 for verbs `forbidden` names, TLS with
  a test CA, and stop()/start() on the same port for outages.

`log` records every call as (verb, query, headers), so tests can hold the client to the
verbs the RBAC example grants.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .net import free_port
from .tls import TlsFiles

GROUP_VERSION = "discovery.k8s.io/v1"
PATH = re.compile(r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$")
SERVICE_NAME = "kubernetes.io/service-name"


# --- payloads, as the API reference shapes them -----------------------------------------


def endpoint(
    ip: str,
    pod: str | None,
    *,
    ready: bool | None = True,
    serving: bool | None = True,
    terminating: bool | None = False,
    node: str | None = "node-1",
    zone: str | None = "zone-a",
    namespace: str = "shop",
) -> dict[str, Any]:
    """One element of EndpointSlice.endpoints; a condition given as None is left out."""
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    out: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if pod is not None:
        out["targetRef"] = {
            "kind": "Pod",
            "namespace": namespace,
            "name": pod,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, pod)),
        }
    if node is not None:
        out["nodeName"] = node
    if zone is not None:
        out["zone"] = zone
    return out


def endpoint_slice(
    service: str,
    name: str,
    endpoints: list[dict[str, Any]],
    *,
    port: int | None = 8080,
    port_name: str = "http",
    ports: list[dict[str, Any]] | None = None,
    address_type: str = "IPv4",
    labels: dict[str, str] | None = None,
    namespace: str = "shop",
) -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it for a Service."""
    return {
        "kind": "EndpointSlice",
        "apiVersion": GROUP_VERSION,
        "metadata": {
            "name": name,
            "generateName": f"{service}-",
            "namespace": namespace,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                SERVICE_NAME: service,
                **(labels or {}),
            },
            "annotations": {
                "endpoints.kubernetes.io/last-change-trigger-time": "2026-03-01T10:00:00Z"
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": service,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"svc/{service}")),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports
        if ports is not None
        else [{"name": port_name, "protocol": "TCP", "port": port, "appProtocol": "http"}],
    }


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


# --- label selectors ------------------------------------------------------------------------


def _requirements(selector: str) -> Iterator[str]:
    """Split on the commas that are not inside `in (...)`."""
    depth, start = 0, 0
    for i, c in enumerate(selector):
        depth += c == "("
        depth -= c == ")"
        if c == "," and depth == 0:
            yield selector[start:i].strip()
            start = i + 1
    if selector[start:].strip():
        yield selector[start:].strip()


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for req in _requirements(selector):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            found = key in labels and labels[key] in values
            if found != (op == "in"):
                return False
        elif m := re.fullmatch(r"(\S+?)\s*(!=|==|=)\s*(\S*)", req):
            key, op, value = m.groups()
            equal = labels.get(key) == value
            if equal != (op != "!="):
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _labels(obj: dict[str, Any] | None) -> dict[str, str]:
    return (obj or {}).get("metadata", {}).get("labels") or {}


# --- the server -----------------------------------------------------------------------------


@dataclass
class Call:
    verb: str  # list | watch
    namespace: str
    query: dict[str, str]
    headers: dict[str, str]


class FakeKubeAPI:
    def __init__(self, tls: TlsFiles | None = None, token: str | None = "sa-token-1") -> None:
        self.port = free_port()
        self.tls = tls
        self.tokens = {token} if token else set()  # accepted bearer tokens; empty: no auth
        self.forbidden: set[str] = set()  # verbs answered 403
        self.fail_with: int | None = None  # answer every call with this status
        self.expire_as = "event"  # or "http": how a too-old resourceVersion is refused
        self.list_delay = 0.0  # seconds a list takes (to look inside a relist)
        self.log: list[Call] = []
        # Reentrant: a test can make several changes in one step (`with fake.cond: ...`).
        self.cond = threading.Condition(threading.RLock())
        self.rv = 100  # the cluster's resourceVersion; other objects move it too
        self.oldest = 100  # watches from below this get 410
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any], dict[str, Any] | None]] = []
        self.bookmarks = 0  # bumped by bookmark(): open watches send one
        self.expirations = 0  # bumped by expire(): open watches get ERROR 410
        self.endings = 0  # bumped by end_watches(): open watches end as at their timeout
        self._end_bookmark = True
        self.stopped = False
        self.open_watches = 0
        self._pages: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def calls(self, verb: str) -> list[Call]:
        with self.cond:
            return [c for c in self.log if c.verb == verb]

    # --- the cluster ------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> int:
        """Create or replace a slice (as the EndpointSlice controller would); its new
        resourceVersion."""
        with self.cond:
            obj = copy.deepcopy(obj)
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            old = self.objects.get(key)
            self.rv += 1
            meta["resourceVersion"] = str(self.rv)
            meta["uid"] = (old or obj)["metadata"].get("uid") or str(uuid.uuid4())
            meta["generation"] = (old["metadata"]["generation"] + 1) if old else 1
            meta.setdefault("creationTimestamp", "2026-03-01T10:00:00Z")
            self.objects[key] = obj
            self.history.append((self.rv, "MODIFIED" if old else "ADDED", obj, old))
            self.cond.notify_all()
            return self.rv

    def delete(self, name: str, namespace: str = "shop") -> None:
        with self.cond:
            old = self.objects.pop((namespace, name))
            self.rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self.history.append((self.rv, "DELETED", gone, old))
            self.cond.notify_all()

    def tick(self, n: int = 1) -> None:
        """Other objects in the cluster change: the resourceVersion moves, no slice does."""
        with self.cond:
            self.rv += n

    def bookmark(self) -> None:
        with self.cond:
            self.bookmarks += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget history up to now, quietly (etcd compaction): only watches that start
        from an older resourceVersion notice."""
        with self.cond:
            self.oldest = self.rv
            self.history = [h for h in self.history if h[0] > self.oldest]

    def expire(self) -> None:
        """Compact, and send ERROR 410 to every open watch (it fell out of the window)."""
        with self.cond:
            self.compact()
            self.expirations += 1
            self.cond.notify_all()

    def end_watches(self, bookmark: bool = True) -> None:
        """Open watches end as they do at their timeoutSeconds (with a last bookmark), or
        as a proxy in between ends them (without)."""
        with self.cond:
            self.endings += 1
            self._end_bookmark = bookmark
            self.cond.notify_all()

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeKubeAPI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                if fake.tls is not None:
                    try:
                        self.request.do_handshake()
                    except (OSError, ssl.SSLError):
                        self.request.close()
                        raise
                super().setup()
                with fake.cond:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake.cond:
                    fake._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                try:
                    fake._get(self)
                except OSError:
                    pass  # the client went away

        self.stopped = False
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(self.tls.server_cert), str(self.tls.server_key))
            server.socket = ctx.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away like a dead process: listener and every open connection."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.cond:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- requests ---------------------------------------------------------------------------------

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        m = PATH.match(parts.path)
        watching = query.get("watch") in ("true", "1")
        verb = "watch" if watching else "list"
        with self.cond:
            self.log.append(Call(verb, m.group(1) if m else "", query, dict(h.headers.items())))
        if m is None:
            return self._send(
                h, 404, status(404, "NotFound", "the server could not find the requested resource")
            )
        namespace = m.group(1)
        if self.fail_with:
            return self._send(
                h,
                self.fail_with,
                status(self.fail_with, "InternalError", "etcdserver: request timed out"),
            )
        if (
            self.tokens
            and h.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens
        ):
            return self._send(h, 401, status(401, "Unauthorized", "Unauthorized"))
        if verb in self.forbidden:
            message = (
                f'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:'
                f'{namespace}:nginxgen" cannot {verb} resource "endpointslices" in API group '
                f'"discovery.k8s.io" in the namespace "{namespace}"'
            )
            return self._send(h, 403, status(403, "Forbidden", message))
        selector = query.get("labelSelector", "")
        if watching:
            return self._watch(h, namespace, selector, query)
        return self._list(h, namespace, selector, query)

    def _send(self, h: BaseHTTPRequestHandler, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Audit-Id", str(uuid.uuid4()))
        h.end_headers()
        h.wfile.write(data)

    def _list(
        self, h: BaseHTTPRequestHandler, namespace: str, selector: str, q: dict[str, str]
    ) -> None:
        limit = int(q.get("limit") or 0)
        token = q.get("continue")
        if self.list_delay:
            time.sleep(self.list_delay)
        with self.cond:
            if token:
                page = self._pages.get(token)
                if page is None or page[0] < self.oldest:
                    message = (
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter."
                    )
                    return self._send(h, 410, status(410, "Expired", message))
                rv, items = page
            else:
                rv = self.rv
                items = [
                    self._item(obj)
                    for (ns, _), obj in sorted(self.objects.items())
                    if ns == namespace and selector_matches(selector, _labels(obj))
                ]
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            rest = items[limit:]
            items = items[:limit]
            next_token = base64.b64encode(
                json.dumps({"rv": rv, "n": len(self._pages)}).encode()
            ).decode()
            with self.cond:
                self._pages[next_token] = (rv, rest)
            meta["continue"] = next_token
            meta["remainingItemCount"] = len(rest)
        self._send(
            h,
            200,
            {
                "kind": "EndpointSliceList",
                "apiVersion": GROUP_VERSION,
                "metadata": meta,
                "items": items,
            },
        )

    @staticmethod
    def _item(obj: dict[str, Any]) -> dict[str, Any]:
        """List items carry no kind/apiVersion; the list does."""
        return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}

    def _watch(
        self, h: BaseHTTPRequestHandler, namespace: str, selector: str, q: dict[str, str]
    ) -> None:
        bookmarks = q.get("allowWatchBookmarks") == "true"
        timeout = float(q.get("timeoutSeconds") or 1800)
        since = q.get("resourceVersion", "")
        with self.cond:
            start = int(since) if since not in ("", "0") else self.rv
            too_old = start < self.oldest
            initial = (
                []
                if since not in ("", "0")
                else [
                    ("ADDED", o)
                    for (ns, _), o in sorted(self.objects.items())
                    if ns == namespace and selector_matches(selector, _labels(o))
                ]
            )
        expired = status(410, "Expired", f"too old resource version: {start} ({self.oldest})")
        if too_old and self.expire_as == "http":
            return self._send(h, 410, expired)
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Audit-Id", str(uuid.uuid4()))
        h.end_headers()

        def send(kind: str, obj: dict[str, Any]) -> None:
            data = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()

        def bookmark(rv: int) -> None:
            send(
                "BOOKMARK",
                {
                    "kind": "EndpointSlice",
                    "apiVersion": GROUP_VERSION,
                    "metadata": {"resourceVersion": str(rv), "creationTimestamp": None},
                },
            )

        if too_old:
            send("ERROR", expired)
            h.wfile.write(b"0\r\n\r\n")
            return
        for kind, obj in initial:
            send(kind, obj)
        deadline = time.monotonic() + timeout
        position = start
        with self.cond:
            self.open_watches += 1
            seen = (self.bookmarks, self.expirations, self.endings)
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(
                        lambda seen=seen, position=position: (
                            self.stopped
                            or (self.bookmarks, self.expirations, self.endings) != seen
                            or (self.history and self.history[-1][0] > position)
                        ),
                        max(0.0, deadline - time.monotonic()),
                    )
                    if self.stopped:
                        return  # stop() shuts the connection down
                    events = [e for e in self.history if e[0] > position]
                    now = (self.bookmarks, self.expirations, self.endings)
                    rv = self.rv
                for erv, kind, obj, old in events:
                    position = erv
                    now_in = (
                        selector_matches(selector, _labels(obj))
                        and obj["metadata"]["namespace"] == namespace
                    )
                    was_in = (
                        old is not None
                        and selector_matches(selector, _labels(old))
                        and old["metadata"]["namespace"] == namespace
                    )
                    if kind == "DELETED":
                        kind = "DELETED" if was_in else ""
                    elif now_in and not was_in:
                        kind = "ADDED"
                    elif was_in and not now_in:
                        kind = "DELETED"
                    elif not now_in:
                        kind = ""
                    if kind:
                        send(kind, obj)
                if now[1] != seen[1]:
                    send(
                        "ERROR",
                        status(
                            410, "Expired", f"too old resource version: {position} ({self.oldest})"
                        ),
                    )
                    break
                ended = now[2] != seen[2]
                if ended or time.monotonic() >= deadline:
                    if bookmarks and (self._end_bookmark or not ended):
                        # as the API server does just before a watch's deadline
                        bookmark(max(position, rv))
                    break
                if now[0] != seen[0] and bookmarks:
                    bookmark(rv)
                    position = max(position, rv)
                seen = now
            h.wfile.write(b"0\r\n\r\n")
        finally:
            with self.cond:
                self.open_watches -= 1
