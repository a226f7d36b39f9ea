"""A WebSocket echo backend and a client, on the `websockets` package (a test extra).

The server echoes every message back, text as text and binary as binary, and remembers
each handshake's path and headers, so a test can see what the gateway sent upstream. It
sends no pings unless asked: an idle connection stays idle, so a test of the gateway's
read timeout measures the gateway and not the backend's keepalive.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from websockets.sync.client import ClientConnection, connect
from websockets.sync.server import Server, ServerConnection, serve


@dataclass(frozen=True)
class Handshake:
    path: str
    headers: dict[str, str]


class WebSocketEcho:
    def __init__(
        self,
        name: str = "ws",
        *,
        ssl_context: ssl.SSLContext | None = None,
        ping_interval: float | None = None,
    ) -> None:
        self.name = name
        self.ssl_context = ssl_context
        self.ping_interval = ping_interval
        self.handshakes: list[Handshake] = []
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.socket.getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._server.connections) if self._server else 0

    def _echo(self, ws: ServerConnection) -> None:
        request = ws.request
        if request is not None:
            with self._lock:
                self.handshakes.append(Handshake(request.path, dict(request.headers.raw_items())))
        for message in ws:  # ends when the peer closes
            ws.send(message)

    def start(self) -> WebSocketEcho:
        self._server = serve(
            self._echo,
            "127.0.0.1",
            0,
            ssl=self.ssl_context,
            ping_interval=self.ping_interval,
            compression=None,  # what crosses the gateway is what was sent
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (1001 going away), and wait."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> WebSocketEcho:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def ws_connect(
    port: int,
    path: str = "/",
    *,
    host: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    **options: Any,
) -> ClientConnection:
    """Open a WebSocket to 127.0.0.1:`port` that says `Host: host` (and sends it as SNI
    under TLS), so a test reaches a virtual host without DNS. No pings by default."""
    authority = host or f"127.0.0.1:{port}"
    scheme = "wss" if ssl_context else "ws"
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    options.setdefault("ping_interval", None)
    options.setdefault("compression", None)
    try:
        return connect(
            f"{scheme}://{authority}{path}",
            sock=sock,
            ssl=ssl_context,
            server_hostname=(host.rsplit(":", 1)[0] if host else None) if ssl_context else None,
            open_timeout=timeout,
            **options,
        )
    except BaseException:
        sock.close()
        raise
