"""The HTTP surface through real nginx: TLS hosts by SNI, the redirect, unknown hosts,
snippets, WebSockets, SSE, gRPC and TCP/UDP streams, each with real backends."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.certs import make_ca, make_cert, write_pair
from tests.helpers.components import require_nginx
from tests.helpers.gateway import write_spec
from tests.helpers.net import free_port

IDLE = 30.0  # what the issue asks a WebSocket to survive without a message


def render(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
    )


def tls_client(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def tls_handshake(port: int, sni: str, ca: Path) -> tuple[dict[str, Any], str | None]:
    """The certificate nginx shows for `sni`, and the protocol ALPN chose."""
    ctx = tls_client(ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            return tls.getpeercert(), tls.selected_alpn_protocol()


def https(port: int, sni: str, path: str, ca: Path, host: str | None = None) -> Any:
    """GET over TLS to 127.0.0.1:`port` with SNI `sni` and Host `host` (default: sni)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(sni, port, timeout=10, context=ctx)
    conn._create_connection = lambda *a, **kw: socket.create_connection(  # type: ignore[attr-defined]
        ("127.0.0.1", port), timeout=10
    )
    try:
        conn.request("GET", path, headers={"Host": host or sni})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def plain(port: int, host: str, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def san_names(cert: dict[str, Any]) -> list[str]:
    return [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


def test_two_tls_hosts_on_one_port_by_sni_redirect_and_unknown_hosts(
    workdir, backends, nginx_runner
):
    require_nginx()
    now = datetime.now(timezone.utc)
    ca = make_ca(now=now)
    ca_file = workdir / "ca.pem"
    ca_file.write_bytes(ca.pem())
    write_pair(workdir, "a", [make_cert(["a.test"], issuer=ca, now=now)])
    write_pair(workdir, "b", [make_cert(["*.b.test"], issuer=ca, now=now)])
    users, orders = backends("users"), backends("orders")
    http_port, tls_port = free_port(), free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "pid": "nginx.pid",
                "listen": [
                    {"host": "127.0.0.1", "port": http_port, "redirect_to_https": True},
                    {"host": "127.0.0.1", "port": tls_port, "tls": True, "http2": True},
                ],
            },
            "snippets": {"http": "map $request_method $x { default a; }"},
            "hosts": [
                {
                    "server_names": ["a.test"],
                    "tls": {"cert": "a.pem", "key": "a.key", "hsts": True},
                    "routes": [{"path": "/", "service": "users"}],
                },
                {
                    "server_names": ["*.b.test"],
                    "tls": {"cert": "b.pem", "key": "b.key"},
                    "snippets": "set $y b;",
                    "routes": [
                        {
                            "path": "/api/",
                            "service": "orders",
                            "snippets": 'add_header X-Y "$x,$y" always;',
                        }
                    ],
                },
            ],
        },
        {
            "users": [{"id": "u1", "address": users.address}],
            "orders": [{"id": "o1", "address": orders.address}],
        },
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 0, result.stderr
    nginx = nginx_runner(conf, workdir / "nginx.pid", tls_port)

    cert, alpn = tls_handshake(tls_port, "a.test", ca_file)
    assert san_names(cert) == ["a.test"] and alpn == "h2"
    cert, _ = tls_handshake(tls_port, "x.b.test", ca_file)
    assert san_names(cert) == ["*.b.test"]

    status, headers, _ = https(tls_port, "a.test", "/hello", ca_file)
    assert status == 200 and headers["X-Backend"] == "users"
    assert headers["Strict-Transport-Security"] == "max-age=63072000"
    status, headers, _ = https(tls_port, "x.b.test", "/api/o", ca_file)
    assert status == 200 and headers["X-Backend"] == "orders"
    assert headers["X-Y"] == "a,b"  # the http, host and route snippets, all three
    assert "Strict-Transport-Security" not in headers

    # An unknown name: no handshake; a known SNI with an unknown Host: 421, not proxied.
    with pytest.raises(ssl.SSLError):
        tls_handshake(tls_port, "c.test", ca_file)
    before = len(users.requests)
    status, _, body = https(tls_port, "a.test", "/x", ca_file, host="c.test")
    assert status == 421 and b"misdirected" in body
    assert len(users.requests) == before

    # Plain HTTP: certificate hosts redirect to their https:// URL, unknown names get 404.
    status, headers, _ = plain(http_port, "a.test", "/p?q=1")
    assert status == 308
    assert headers["Location"] == f"https://a.test:{tls_port}/p?q=1"
    assert "Strict-Transport-Security" not in headers
    status, _, body = plain(http_port, "nobody.test", "/")
    assert status == 404 and b"unknown host" in body
    assert "emerg" not in nginx.errors()


def test_websocket_sse_and_grpc_through_the_gateway(workdir, nginx_runner):
    require_nginx()
    from tests.helpers.grpc_backend import GrpcBackend, backend_name, grpc_channel, health_status
    from tests.helpers.sse import SseServer, read_events
    from tests.helpers.websocket import WebSocketEcho, ws_connect

    port, h2c_port = free_port(), free_port()
    with WebSocketEcho("chat") as ws, SseServer("feed") as sse:
        first, second = GrpcBackend("g1").start(), GrpcBackend("g2").start()
        try:
            first_address = first.address
            first.stop()  # a dead first instance: every call fails over to the second
            spec = write_spec(
                workdir,
                {
                    "nginx": {
                        "flavor": "nginx",
                        "pid": "nginx.pid",
                        "listen": [
                            f"127.0.0.1:{port}",
                            {"host": "127.0.0.1", "port": h2c_port, "http2": True},
                        ],
                    },
                    # gzip on for everything: the streaming route must still not compress.
                    "snippets": {"http": "gzip on;\ngzip_types text/event-stream;"},
                    "defaults": {"timeouts": {"read": "2s"}, "health": {"max_fails": 0}},
                    "routes": [
                        {"path": "/ws/", "service": "chat", "websocket": True},
                        {"path": "/events/", "service": "feed", "streaming": True},
                        {"path": "/grpc.health.v1.Health/", "service": "hc", "protocol": "grpc"},
                        {"path": "/nginxgen.test.Backend/", "service": "hc", "protocol": "grpc"},
                    ],
                },
                {
                    "chat": [{"id": "c1", "address": ws.address}],
                    "feed": [{"id": "f1", "address": sse.address}],
                    "hc": [
                        {"id": "g1", "address": first_address},
                        {"id": "g2", "address": second.address},
                    ],
                },
            )
            conf = workdir / "nginx.conf"
            result = render(spec, conf)
            assert result.returncode == 0, result.stderr
            nginx = nginx_runner(conf, workdir / "nginx.pid", port)

            with ws_connect(port, "/ws/room") as client:
                client.send("hello")
                assert client.recv(timeout=10) == "hello"
                client.send(b"\x00\x01binary")
                assert client.recv(timeout=10) == b"\x00\x01binary"
                quiet_since = time.monotonic()
                assert ws.handshakes[-1].path == "/ws/room"

                # While the WebSocket idles: SSE event by event, then gRPC with failover.
                status, headers, events = read_events(
                    port, "/events/?count=4&interval=0.5", 4, headers={"Accept-Encoding": "gzip"}
                )
                assert status == 200 and "Content-Encoding" not in headers
                assert [e.id for e in events] == ["0", "1", "2", "3"]
                # Delivered as written: the first event arrived before the last was sent
                # (1.5 s later); a buffered or compressed stream arrives only at its end.
                assert events[0].received < sse.sent[-1][1]

                channel = grpc_channel(h2c_port)
                assert health_status(channel) == "SERVING"
                assert {backend_name(channel) for _ in range(6)} == {"g2"}
                channel.close()

                # A WebSocket read timeout is the idle limit: 1h by default, not defaults' 2s.
                time.sleep(max(0.0, IDLE - (time.monotonic() - quiet_since)))
                client.send("still here")
                assert client.recv(timeout=10) == "still here"
            assert "emerg" not in nginx.errors()
        finally:
            second.stop()


def test_grpc_with_nobody_to_serve_is_unavailable_in_dynamic_mode(workdir, nginx_runner):
    # The balancer refuses a pool with nobody (500, contacting no one); the gRPC route's
    # error_page 500 page makes it UNAVAILABLE, the same as a route rendered with nobody
    # alive, and any other 500 nginx made INTERNAL.
    require_nginx("lua")
    import grpc

    from tests.helpers.grpc_backend import grpc_channel, health_status

    port, h2c_port, status_port = free_port(), free_port(), free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "pid": "nginx.pid",
                "endpoints": "dynamic",
                "status_listen": f"127.0.0.1:{status_port}",
                "listen": [
                    f"127.0.0.1:{port}",
                    {"host": "127.0.0.1", "port": h2c_port, "http2": True},
                ],
            },
            "routes": [
                {"path": "/grpc.health.v1.Health/", "service": "hc", "protocol": "grpc"},
                # Any other 500 nginx makes in a gRPC route: here a snippet's.
                {
                    "path": "/x.Break/",
                    "service": "ok",
                    "protocol": "grpc",
                    "snippets": "return 500;",
                },
            ],
        },
        {
            "hc": [{"id": "g1", "address": f"127.0.0.1:{free_port()}", "state": "down"}],
            "ok": [{"id": "o1", "address": f"127.0.0.1:{free_port()}"}],
        },
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "error_page 500 = @nginxgen_grpc_500;" in text
    assert "error_page 502 503 504 = @nginxgen_grpc_unavailable;" in text
    nginx = nginx_runner(conf, workdir / "nginx.pid", port)
    channel = grpc_channel(h2c_port)
    with pytest.raises(grpc.RpcError) as caught:
        health_status(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # Not a 503 JSON: a gRPC answer (trailers-only) the client reads as a status.
    assert caught.value.details() == "unavailable"
    # A 500 that is not "nobody to serve" is the gateway's own error: INTERNAL, no retry.
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/x.Break/Call")(b"", timeout=5)
    channel.close()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "gateway internal error"
    assert "connect() failed" not in nginx.errors()


def test_tcp_and_udp_streams_with_failover(workdir, nginx_runner):
    install = require_nginx("stream")
    from tests.helpers.echo import TcpEcho, UdpEcho, tcp_exchange, udp_exchange

    tcp_port, udp_port, http_port = free_port(), free_port(), free_port()
    dead = free_port()  # nothing listens: a refused connect fails over
    with TcpEcho("t") as tcp, UdpEcho("u") as udp:
        spec = write_spec(
            workdir,
            {
                "nginx": {
                    "flavor": "nginx",
                    "pid": "nginx.pid",
                    "listen": f"127.0.0.1:{http_port}",
                    "modules_path": str(Path(install.module_files("stream")[0]).parent),
                },
                "streams": [
                    {"listen": f"127.0.0.1:{tcp_port}", "service": "tcp-echo"},
                    {
                        "listen": f"127.0.0.1:{udp_port}",
                        "service": "udp-echo",
                        "protocol": "udp",
                        "responses": 1,
                    },
                ],
            },
            {
                "tcp-echo": [
                    {"id": "dead", "address": f"127.0.0.1:{dead}"},
                    {"id": "t", "address": tcp.address},
                ],
                "udp-echo": [{"id": "u", "address": udp.address}],
            },
        )
        conf = workdir / "nginx.conf"
        result = render(spec, conf)
        assert result.returncode == 0, result.stderr
        nginx = nginx_runner(conf, workdir / "nginx.pid", tcp_port)

        # Round robin picks the dead instance for about half: each of those fails over.
        for i in range(6):
            assert tcp_exchange(tcp_port, b"ping %d" % i) == b"ping %d" % i
        assert tcp.connections >= 6
        assert udp_exchange(udp_port, b"dgram") == b"dgram"
        assert "emerg" not in nginx.errors()


def test_a_bad_snippet_is_refused_with_its_line_and_nothing_is_written(workdir):
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": free_port()},
            "routes": [{"path": "/", "service": "x", "snippets": "add_header X-A;"}],
        },
        {"x": [{"id": "x1", "address": "127.0.0.1:9"}]},
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 2, result.stderr  # a spec error
    assert "routes[0].snippets: line 1 of the snippet:" in result.stderr
    assert f"{spec}:" in result.stderr and "Traceback" not in result.stderr
    assert not conf.exists()


def test_a_templates_dir_partial_serves_through_real_nginx(workdir, backends, nginx_runner):
    """An override of a partial nginxgen includes (gateway_location.conf.j2), wrapping the
    bundled one: its header reaches the client, and traffic still reaches the backend."""
    require_nginx()
    users = backends("users")
    port = free_port()
    partials = workdir / "partials"
    partials.mkdir()
    (partials / "gateway_location.conf.j2").write_text(
        '{% include "nginxgen/gateway_location.conf.j2" %}\n'
        '            add_header X-Team "platform" always;\n'
    )
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "pid": "nginx.pid", "listen": f"127.0.0.1:{port}"},
            "templates_dir": "partials",
            "routes": [{"path": "/", "service": "users"}],
        },
        {"users": [{"id": "u1", "address": users.address}]},
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 0, result.stderr
    nginx_runner(conf, workdir / "nginx.pid", port)
    status, headers, _ = plain(port, "localhost", "/hello")
    assert status == 200 and headers["X-Backend"] == "users"
    assert headers["X-Team"] == "platform"


def test_watch_serves_an_edited_template_after_one_reload(workdir, backends, watched_gateway):
    """`watch` notices an edited partial in templates_dir by itself: one reload, reason
    `templates`, and the new text serves."""
    from tests.helpers.poll import poll_until

    users = backends("users")
    partials = workdir / "partials"
    partials.mkdir()
    partials.chmod(0o755)
    team = partials / "gateway_location.conf.j2"
    wrapper = '{% include "nginxgen/gateway_location.conf.j2" %}\n'
    team.write_text(wrapper + '            add_header X-Team "a" always;\n')
    gw = watched_gateway(
        {"app": [{"id": "u1", "address": users.address}]}, extra={"templates_dir": "partials"}
    )

    def team_header() -> str | None:
        return requests.get(gw.url, timeout=10).headers.get("X-Team")

    assert team_header() == "a"
    team.write_text(wrapper + '            add_header X-Team "b" always;\n')
    poll_until(lambda: team_header() == "b", 30, "the edited template serving", detail=gw.logs)
    # nginx serves the new config before the sidecar has confirmed and counted the reload.
    reloads = 'nginxgen_reloads_total{reason="templates"}'
    poll_until(lambda: gw.metric(reloads) >= 1, 30, "the reload counted", detail=gw.logs)
    assert gw.metric(reloads) == 1
    assert "template file changed" in gw.logs()
