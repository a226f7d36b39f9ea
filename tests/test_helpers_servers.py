"""tests/helpers backends for the HTTP-surface tests: each starts on a free loopback port,
does its one job, and stops cleanly."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from websockets.exceptions import ConnectionClosed

from tests.helpers.certs import make_ca, make_cert
from tests.helpers.echo import TcpEcho, UdpEcho, tcp_exchange, udp_exchange
from tests.helpers.grpc_backend import GrpcBackend, backend_name, grpc_channel, health_status
from tests.helpers.poll import poll_until
from tests.helpers.sse import SseServer, read_events
from tests.helpers.websocket import WebSocketEcho, ws_connect


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)  # served to real TLS clients: today's clock
    ca = make_ca(now=now)
    leaf = make_cert(["a.test", "127.0.0.1"], issuer=ca, now=now)
    return {"ca": ca.pem(), "chain": leaf.pem() + ca.pem(), "key": leaf.key_pem()}


def server_context(pki: dict[str, bytes], tmp_path: Path) -> ssl.SSLContext:
    (tmp_path / "chain.pem").write_bytes(pki["chain"])
    (tmp_path / "key.pem").write_bytes(pki["key"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    return ctx


def client_context(pki: dict[str, bytes]) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=pki["ca"].decode())


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_websocket_echo_answers_in_kind_and_records_the_handshake():
    with WebSocketEcho("chat") as server:
        with ws_connect(server.port, "/ws/room?x=1", host="a.test") as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=5) == b"\x00\x01"
        [handshake] = server.handshakes
        assert handshake.path == "/ws/room?x=1" and handshake.headers["Host"] == "a.test"
        port = server.port
    assert refused(port)


def test_websocket_echo_stop_closes_open_connections():
    server = WebSocketEcho().start()
    with ws_connect(server.port) as ws:
        # The server counts a connection in its own thread, after the handshake's answer.
        poll_until(lambda: server.open_connections == 1, what="the server to count it")
        server.stop()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


def test_websocket_echo_over_tls(pki, tmp_path):
    with WebSocketEcho(ssl_context=server_context(pki, tmp_path)) as server:
        with ws_connect(server.port, host="a.test", ssl_context=client_context(pki)) as ws:
            ws.send("secure")
            assert ws.recv(timeout=5) == "secure"


def test_sse_events_arrive_one_by_one():
    with SseServer("feed") as server:
        status, headers, events = read_events(server.port, "/events?count=3&interval=0.4", 3)
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    assert [(e.id, e.event, json.loads(e.data)["n"]) for e in events] == [
        ("0", "tick", 0),
        ("1", "tick", 1),
        ("2", "tick", 2),
    ]
    sent = dict(server.sent)
    # Each event was in the client's hands before the server wrote the next one.
    assert all(events[i].received < sent[i + 1] for i in range(2))


def test_grpc_backend_answers_health_and_its_name():
    with GrpcBackend("g1") as backend:
        with grpc_channel(backend.port, authority="a.test") as channel:
            assert health_status(channel) == "SERVING"
            assert backend_name(channel) == "g1" and backend.calls == 1
            backend.set_serving(False)
            assert health_status(channel, "nginxgen.test.Backend") == "NOT_SERVING"
        port = backend.port
    with grpc_channel(port) as channel, pytest.raises(grpc.RpcError) as info:
        health_status(channel, timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_backend_over_tls(pki):
    with GrpcBackend("g-tls", tls=(pki["chain"], pki["key"])) as backend:
        with grpc_channel(backend.port, authority="a.test", root_certificates=pki["ca"]) as ch:
            assert health_status(ch) == "SERVING" and backend_name(ch) == "g-tls"


def test_tcp_echo_counts_connections_and_dies_like_a_process():
    server = TcpEcho("db").start()
    port = server.port
    assert tcp_exchange(server.port, b"ping\n") == b"ping\n"
    assert tcp_exchange(server.port, b"x" * 200_000) == b"x" * 200_000
    assert server.connections == 2
    held = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    held.sendall(b"a")
    assert held.recv(1) == b"a"
    server.stop()
    held.settimeout(5)
    assert held.recv(1) == b""  # the open connection went away with it
    held.close()
    assert refused(port)


def test_udp_echo_answers_each_datagram():
    with UdpEcho("dns") as server:
        assert udp_exchange(server.port, b"q1") == b"q1"
        assert udp_exchange(server.port, b"q2") == b"q2"
        assert server.datagrams == 2
        port = server.port
    assert udp_exchange(port, b"q3", timeout=0.5) == b""
