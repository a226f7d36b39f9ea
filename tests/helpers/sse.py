"""A Server-Sent Events backend that emits events with pauses between them, and a client
that notes when each one arrives — so a test can prove a gateway delivers them one by one
instead of holding them in a buffer until the response ends.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .loopback import LoopbackServer


class SseServer(LoopbackServer):
    """GET /anything?count=N&interval=S streams N events, S seconds apart (defaults 3, 0.5),
    as chunked HTTP/1.1. `sent` holds (event id, monotonic time written) per event."""

    def __init__(self, name: str = "sse", *, extra_headers: dict[str, str] | None = None) -> None:
        super().__init__(name)
        self.extra_headers = dict(extra_headers or {})
        self.sent: list[tuple[int, float]] = []
        self.requests: list[dict[str, Any]] = []

    def make_server(self) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = parse_qs(urlsplit(self.path).query)
                count = int(query.get("count", ["3"])[0])
                interval = float(query.get("interval", ["0.5"])[0])
                with owner._lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("X-Backend", owner.name)
                for k, v in owner.extra_headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    for n in range(count):
                        if n:
                            time.sleep(interval)
                        data = json.dumps({"n": n, "backend": owner.name})
                        self._chunk(f"id: {n}\nevent: tick\ndata: {data}\n\n".encode())
                        with owner._lock:
                            owner.sent.append((n, time.monotonic()))
                    self._chunk(b"")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away: so does the stream

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str | None
    data: str
    received: float  # time.monotonic() when its blank line arrived


def read_events(
    port: int,
    path: str,
    count: int,
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 15.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], list[SseEvent]]:
    """GET `path` on 127.0.0.1:`port` (Host: `host`) and read `count` events as they come.
    Returns the status, the response headers and the events. The body is read as sent:
    ask for `Accept-Encoding: gzip` in `headers` only to see that it is not compressed."""
    conn: http.client.HTTPConnection
    if ssl_context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ssl_context)
        if host:  # SNI and certificate name come from the host, not the address
            conn.host = host.rsplit(":", 1)[0]
            conn._create_connection = _to_loopback(port)  # type: ignore[attr-defined]
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = {"Accept": "text/event-stream", **(headers or {})}
    if host:
        sent["Host"] = host
    deadline = time.monotonic() + timeout
    try:
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        events: list[SseEvent] = []
        buffer = b""
        fields: dict[str, str] = {}
        while len(events) < count and time.monotonic() < deadline:
            data = response.read1(65536)
            if not data:
                break
            buffer += data
            while b"\n" in buffer and len(events) < count:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode().rstrip("\r")
                if text == "":
                    if fields:
                        events.append(
                            SseEvent(
                                fields.get("id"),
                                fields.get("event"),
                                fields.get("data", ""),
                                time.monotonic(),
                            )
                        )
                    fields = {}
                elif not text.startswith(":"):
                    key, _, value = text.partition(":")
                    fields[key] = value.removeprefix(" ")
        return response.status, dict(response.getheaders()), events
    finally:
        conn.close()


def _to_loopback(port: int) -> Any:
    import socket

    def create(address: tuple[str, int], *args: Any, **kw: Any) -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), *args, **kw)

    return create
