"""The part every in-process test server shares: a socketserver on a loopback port, served
from a daemon thread, started and stopped by the test (or by `with`)."""

from __future__ import annotations

import socketserver
import threading
from typing import Any, TypeVar

S = TypeVar("S", bound="LoopbackServer")


class LoopbackServer:
    """Subclasses build their server in `make_server()` (bound to 127.0.0.1, port 0 for a
    free one); `stop()` is a dead process to the client: the listener goes away."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._server: socketserver.BaseServer | None = None

    def make_server(self) -> socketserver.BaseServer:
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])  # type: ignore[index]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self: S) -> S:
        server = self.make_server()
        server.daemon_threads = True  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
