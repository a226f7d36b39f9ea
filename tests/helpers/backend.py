"""Real HTTP servers on loopback ports that stand in for applications: a Backend that says
who it is (or echoes what reached it) and counts requests, and an auth_request service."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from .net import free_port


class Backend:
    """A real HTTP server on a loopback port that says who it is and counts requests.

    It answers `{"backend": name, "path": ...}` with `X-Backend: name`; with `echo` it
    answers every request header (as [name, value] pairs, repeats kept) and the body
    instead, so whatever reached it for one client shows in what another client gets.
    Behaviour can be changed while it runs: `status`, `delay` (seconds), `health_status`
    (for /healthz), `extra_headers`, `body` (replaces the answer); a request with
    `X-Test-Delay: <seconds>` is answered that much later.

    Headers and body go out as two writes, so the server sets TCP_NODELAY: with Nagle on,
    each kept-alive answer waited for the peer's delayed ACK (40 ms), and 42 requests took
    1.5 s instead of 0.15.
    """

    def __init__(
        self,
        name: str,
        port: int | None = None,
        *,
        echo: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.tls = tls  # a server context: HTTPS (with CERT_REQUIRED: mutual TLS)
        self.port = port or free_port()
        self.echo = echo
        self.status = 200
        self.delay = 0.0
        self.health_status = 200
        self.extra_headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def headers_seen(self, i: int = -1) -> dict[str, str]:
        """The headers of request `i` (lowercased names; a repeated header joined by ', ')."""
        out: dict[str, str] = {}
        for k, v in self.requests[i]["header_list"]:
            out[k.lower()] = f"{out[k.lower()]}, {v}" if k.lower() in out else v
        return out

    def connections(self) -> list[socket.socket]:
        """The connections open to it now (from the server's side)."""
        with self._lock:
            return list(self._connections)

    def start(self) -> Backend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # set on each accepted connection (see above)

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with backend._lock:
                    backend._connections.add(self.connection)

            def finish(self) -> None:
                with backend._lock:
                    backend._connections.discard(self.connection)
                super().finish()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body_in = self.rfile.read(length) if length else b""
                if self.path.startswith("/healthz"):
                    self._send(backend.health_status, b"ok")
                    return
                seen = {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers.items()),
                    "header_list": [[k, v] for k, v in self.headers.items()],
                    "body": body_in,
                    "at": time.monotonic(),
                    "peer": _peer_name(self.connection),
                }
                with backend._lock:
                    backend.requests.append(seen)
                delay = float(self.headers.get("X-Test-Delay") or backend.delay)
                if delay:
                    time.sleep(delay)
                if backend.body is not None:
                    payload = backend.body
                elif backend.echo:
                    payload = json.dumps(
                        {
                            "backend": backend.name,
                            "method": self.command,
                            "path": self.path,
                            "headers": seen["header_list"],
                            "body": body_in.decode("latin-1"),
                        }
                    ).encode()
                else:
                    payload = json.dumps({"backend": backend.name, "path": self.path}).encode()
                self._send(backend.status, payload)

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if not backend.echo:  # an echo answers only with what reached it
                    self.send_header("X-Backend", backend.name)
                for k, v in backend.extra_headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer
            do_PATCH = do_OPTIONS = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            # A failed handshake raises in accept(), which socketserver drops quietly.
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # A dead process takes its kept-alive connections with it; so must a stopped backend.
        for conn in self.connections():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _peer_name(conn: socket.socket) -> str | None:
    """The common name of the client certificate a TLS peer showed, if any."""
    if not isinstance(conn, ssl.SSLSocket):
        return None
    cert = conn.getpeercert() or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class AuthService:
    """An auth_request target at /verify: a known token (`X-Token: <token>` or
    `Authorization: Bearer <token>`) → 200 with `X-User-Id: <user>`; a forbidden one →
    403; anything else → 401. `seen` holds each check's headers (names lowercased) and
    its path."""

    def __init__(self, users: dict[str, str], forbidden: Iterable[str] = ()) -> None:
        self.users = dict(users)
        self.forbidden = set(forbidden)
        self.seen: list[dict[str, str]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                headers = {k.lower(): v for k, v in self.headers.items()}
                service.seen.append({**headers, "path": self.path})
                token = headers.get("x-token") or ""
                bearer = headers.get("authorization") or ""
                if bearer.startswith("Bearer "):
                    token = bearer[len("Bearer ") :]
                user = service.users.get(token)
                status = 200 if user else 403 if token in service.forbidden else 401
                self.send_response(status)
                if user:
                    self.send_header("X-User-Id", user)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/verify"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def who_answers(url: str, n: int, *, fresh: bool = False, **kwargs: Any) -> Counter[str]:
    """Send n GETs; count the answering backend names (status != 200 counted as 'HTTP <n>').

    `fresh`: each on a new connection. A kept-alive one may be closed by an old worker
    during a reload, which is nginx's graceful behaviour, not a failed request.
    """
    if fresh:
        kwargs["headers"] = {**kwargs.get("headers", {}), "Connection": "close"}
    seen: Counter[str] = Counter()
    with requests.Session() as s:
        for _ in range(n):
            r = s.get(url, timeout=10, **kwargs)
            seen[
                r.headers.get("X-Backend", "?") if r.status_code == 200 else f"HTTP {r.status_code}"
            ] += 1
    return seen
