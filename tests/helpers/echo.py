"""TCP and UDP echo backends on free loopback ports, and clients with deadlines.

Each counts what it served (`connections`, `datagrams`), so a failover test can tell
which instance took the traffic while the bytes themselves stay a pure echo.
"""

from __future__ import annotations

import socket
import socketserver
import time

from .loopback import LoopbackServer


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # a restarted backend takes its old port back at once


class TcpEcho(LoopbackServer):
    def __init__(self, name: str = "tcp") -> None:
        super().__init__(name)
        self.connections = 0
        self._open: set[socket.socket] = set()

    def make_server(self) -> _TcpServer:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                with owner._lock:
                    owner.connections += 1
                    owner._open.add(sock)
                try:
                    while data := sock.recv(65536):
                        sock.sendall(data)
                except OSError:
                    pass
                finally:
                    with owner._lock:
                        owner._open.discard(sock)

        return _TcpServer(("127.0.0.1", 0), Handler)

    def stop(self) -> None:
        """Stop like a dead process: the listener and every open connection go away."""
        super().stop()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class UdpEcho(LoopbackServer):
    def __init__(self, name: str = "udp") -> None:
        super().__init__(name)
        self.datagrams = 0

    def make_server(self) -> socketserver.ThreadingUDPServer:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                with owner._lock:
                    owner.datagrams += 1
                sock.sendto(data, self.client_address)

        return socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)


def tcp_exchange(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send `data` and read as many bytes back (an echo answers exactly that many).
    Returns what arrived before the peer closed or the deadline passed."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while len(received) < len(data):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
        return received


def udp_exchange(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """One datagram out, one back; b"" when none came before the deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            answer, _ = sock.recvfrom(65536)
        except (TimeoutError, ConnectionRefusedError):
            return b""
        return answer
