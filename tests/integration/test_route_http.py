"""What routes do to HTTP, through real nginx with real backends: methods (405 with
Allow), rewrite, request and response header changes, CORS preflights and answers for
listed and other origins, and TLS to the upstream (verified, a wrong CA, mutual TLS,
gRPC over TLS)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from tests.helpers.certs import Issued, make_ca, make_cert, write_pair
from tests.helpers.components import require_nginx
from tests.helpers.gateway import write_spec
from tests.helpers.net import free_port


def render(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
    )


def send(port: int, method: str, path: str, **headers: str) -> requests.Response:
    """One request on its own connection; header names use '_' for '-'."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    return requests.request(
        method, f"http://127.0.0.1:{port}{path}", headers=sent, timeout=10, allow_redirects=False
    )


def cors_headers(r: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("access-control-")}


def start(workdir: Path, nginx_runner: Any, routes: list[Any], services: dict[str, Any]) -> int:
    port = free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "pid": "nginx.pid", "listen": f"127.0.0.1:{port}"},
            "defaults": {"health": {"max_fails": 0}},
            "routes": routes,
        },
        services,
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 0, result.stderr
    nginx_runner(conf, workdir / "nginx.pid", port)
    return port


def test_methods_rewrite_and_headers_through_nginx(workdir, backends, nginx_runner):
    require_nginx()
    echo = backends("echo", echo=True)
    echo.extra_headers = {"Cache-Control": "public", "X-Powered-By": "php"}
    port = start(
        workdir,
        nginx_runner,
        [
            {"path": "/m/", "service": "echo", "methods": ["GET", "POST"]},
            {
                "path": "/api/",
                "service": "echo",
                "rewrite": {"from": "^/api/v1/(.*)$", "to": "/v2/$1"},
            },
            {
                "path": "/h/",
                "service": "echo",
                "headers": {
                    "request": {
                        "set": {"X-Tenant": 'blue "sky"; {x}', "Host": "a.internal"},
                        "remove": ["Cookie"],
                    },
                    "response": {"set": {"Cache-Control": "no-store"}, "remove": ["X-Powered-By"]},
                },
            },
        ],
        {"echo": [{"id": "e1", "address": echo.address}]},
    )

    # methods: GET, its HEAD and POST pass; the others are 405 with Allow, never proxied.
    assert send(port, "GET", "/m/x").status_code == 200
    assert send(port, "HEAD", "/m/x").status_code == 200
    assert send(port, "POST", "/m/x").status_code == 200
    before = echo.count
    for method in ("DELETE", "PUT", "OPTIONS"):
        r = send(port, method, "/m/x")
        assert r.status_code == 405, method
        assert r.headers["Allow"] == "GET, POST, HEAD"
        assert r.json() == {"error": "method not allowed"}
        assert r.headers["X-Request-ID"]
    assert echo.count == before

    # rewrite: the backend gets the new path with the query string; others pass as sent.
    assert send(port, "GET", "/api/v1/users/7?x=1&y=2").json()["path"] == "/v2/users/7?x=1&y=2"
    assert send(port, "GET", "/api/other").json()["path"] == "/api/other"
    # A decoded '?' in a capture is sent escaped: it cannot become a query string.
    assert send(port, "GET", "/api/v1/a%3Fb").json()["path"] == "/v2/a%3Fb"

    # headers, both ways.
    r = send(port, "GET", "/h/x", Host="gw.test", Cookie="session=1")
    seen = {k.lower(): v for k, v in r.json()["headers"]}
    assert seen["x-tenant"] == 'blue "sky"; {x}'
    assert seen["host"] == "a.internal" and seen["x-forwarded-host"] == "gw.test"
    assert "cookie" not in seen
    assert r.headers["Cache-Control"] == "no-store"  # replaced, not added to
    assert "X-Powered-By" not in r.headers
    assert r.headers["X-Request-ID"]  # the server's header, repeated by the location
    # A route without header changes passes the backend's headers through.
    r = send(port, "GET", "/m/x")
    assert r.headers["Cache-Control"] == "public" and r.headers["X-Powered-By"] == "php"


def test_cors_preflight_and_answers_for_listed_and_other_origins(workdir, backends, nginx_runner):
    require_nginx()
    echo = backends("echo", echo=True)
    echo.extra_headers = {"Access-Control-Allow-Origin": "*", "X-Count": "3"}
    keys = workdir / "keys.txt"
    keys.write_text("k-123\n")
    keys.chmod(0o644)
    port = start(
        workdir,
        nginx_runner,
        [
            {
                "path": "/api/",
                "service": "echo",
                "methods": ["GET", "PUT"],
                "auth": {"api_keys": {"file": "keys.txt"}},
                "cors": {
                    "origins": ["https://app.test", "https://*.example.test"],
                    "credentials": True,
                    "expose_headers": ["X-Count"],
                    "max_age": "1h",
                },
            }
        ],
        {"echo": [{"id": "e1", "address": echo.address}]},
    )
    before = echo.count

    def preflight(origin: str) -> requests.Response:
        return send(
            port,
            "OPTIONS",
            "/api/x",
            Origin=origin,
            Access_Control_Request_Method="PUT",
            Access_Control_Request_Headers="content-type",
        )

    # A preflight from a listed origin is answered here, before the API key check.
    for origin in ("https://app.test", "https://a1.example.test"):
        r = preflight(origin)
        assert r.status_code == 204, origin
        assert cors_headers(r) == {
            "access-control-allow-origin": origin,
            "access-control-allow-methods": "GET, PUT, HEAD",
            "access-control-allow-headers": "Authorization, Content-Type",
            "access-control-max-age": "3600",
            "access-control-allow-credentials": "true",
        }
        assert "Origin" in r.headers["Vary"]
    # Other origins (a deeper subdomain too) get an answer without any CORS header.
    for origin in ("https://evil.test", "https://a.b.example.test", "http://app.test", "null"):
        r = preflight(origin)
        assert r.status_code == 204 and cors_headers(r) == {}, origin
    assert echo.count == before  # no preflight reached the backend

    # Actual requests: the listed origin gets its CORS headers; the backend's are hidden.
    r = send(port, "GET", "/api/x", Origin="https://app.test", X_Api_Key="k-123")
    assert r.status_code == 200
    assert cors_headers(r) == {
        "access-control-allow-origin": "https://app.test",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "X-Count",
    }
    assert r.headers["Vary"] == "Origin" and r.headers["X-Count"] == "3"
    r = send(port, "GET", "/api/x", Origin="https://evil.test", X_Api_Key="k-123")
    assert r.status_code == 200 and cors_headers(r) == {}
    assert r.headers["Vary"] == "Origin"
    # The key check still holds for actual requests; a plain OPTIONS is not a preflight.
    r = send(port, "GET", "/api/x", Origin="https://app.test")
    assert r.status_code == 401
    r = send(port, "OPTIONS", "/api/x", Origin="https://app.test", X_Api_Key="k-123")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, PUT, HEAD"


def test_a_rendered_503_carries_the_routes_cors_and_response_headers(workdir, nginx_runner):
    # endpoints: reload, nobody alive when rendered: the route's own `return 503`.
    require_nginx()
    port = free_port()
    route = {
        "path": "/api/",
        "service": "gone",
        "cors": {"origins": ["https://app.test"]},
        "headers": {"response": {"set": {"X-Route": "api"}}},
    }
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "pid": "nginx.pid",
                "listen": f"127.0.0.1:{port}",
                "endpoints": "reload",
                "status_listen": f"127.0.0.1:{free_port()}",
            },
            "routes": [route, {"path": "/", "service": "gone"}],
        },
        {"gone": [{"id": "g1", "address": "127.0.0.1:9", "state": "down"}]},
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 0, result.stderr
    nginx_runner(conf, workdir / "nginx.pid", port)
    r = send(port, "GET", "/api/x", Origin="https://app.test")
    assert r.status_code == 503 and r.json() == {"error": "service unavailable", "service": "gone"}
    assert cors_headers(r) == {"access-control-allow-origin": "https://app.test"}
    assert r.headers["Vary"] == "Origin" and r.headers["X-Route"] == "api"
    assert r.headers["Retry-After"] == "5" and r.headers["X-Request-ID"]
    r = send(port, "GET", "/x", Origin="https://app.test")
    assert r.status_code == 503 and cors_headers(r) == {} and "X-Route" not in r.headers
    assert r.headers["Retry-After"] == "5" and r.headers["X-Request-ID"]


def _server_context(pair: tuple[Path, Path], client_ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair[0]), str(pair[1]))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca))
    return ctx


def _ca_file(workdir: Path, name: str, ca: Issued) -> Path:
    path = workdir / f"{name}.pem"
    path.write_bytes(ca.pem())
    path.chmod(0o644)
    return path


def test_upstream_tls_verified_wrong_ca_and_mutual_tls(workdir, backends, nginx_runner):
    require_nginx()
    now = datetime.now(timezone.utc)
    ca, other_ca, client_ca = make_ca(now=now), make_ca("other CA", now=now), make_ca(now=now)
    _ca_file(workdir, "ca", ca)
    _ca_file(workdir, "other", other_ca)
    client_ca_file = _ca_file(workdir, "client-ca", client_ca)
    server_pair = write_pair(
        workdir, "orders", [make_cert(["orders.internal"], issuer=ca, now=now)]
    )
    write_pair(workdir, "gw", [make_cert(["gateway"], issuer=client_ca, now=now, client=True)])
    https = backends("orders", echo=True, tls=_server_context(server_pair))
    mutual = backends("mutual", echo=True, tls=_server_context(server_pair, client_ca_file))
    verified = {"ca": "ca.pem", "sni": "orders.internal"}
    port = start(
        workdir,
        nginx_runner,
        [
            {"path": "/good/", "service": "good", "upstream_tls": verified},
            {
                "path": "/wrong/",
                "service": "wrong",
                "upstream_tls": {**verified, "ca": "other.pem"},
            },
            {
                "path": "/name/",
                "service": "name",
                "upstream_tls": {**verified, "sni": "x.internal"},
            },
            {
                "path": "/mtls/",
                "service": "mtls",
                "upstream_tls": {**verified, "client_cert": "gw.pem", "client_key": "gw.key"},
            },
            {"path": "/nocert/", "service": "nocert", "upstream_tls": verified},
        ],
        {
            "good": [{"id": "g1", "address": https.address}],
            "wrong": [{"id": "w1", "address": https.address}],
            "name": [{"id": "n1", "address": https.address}],
            "mtls": [{"id": "m1", "address": mutual.address}],
            "nocert": [{"id": "c1", "address": mutual.address}],
        },
    )
    r = send(port, "GET", "/good/x?q=1")
    assert r.status_code == 200 and r.json()["path"] == "/good/x?q=1"
    # A backend certificate from another CA, or for another name: 502, never proxied.
    before = https.count
    assert send(port, "GET", "/wrong/x").status_code == 502
    assert send(port, "GET", "/name/x").status_code == 502
    assert https.count == before
    # Mutual TLS: the backend sees the gateway's certificate; without one it refuses.
    r = send(port, "GET", "/mtls/x")
    assert r.status_code == 200 and mutual.requests[-1]["peer"] == "gateway"
    assert send(port, "GET", "/nocert/x").status_code == 502
    assert len(mutual.requests) == 1


def test_grpc_over_tls_to_the_upstream(workdir, nginx_runner):
    require_nginx()
    from tests.helpers.grpc_backend import GrpcBackend, grpc_channel, health_status

    now = datetime.now(timezone.utc)
    ca = make_ca(now=now)
    _ca_file(workdir, "ca", ca)
    leaf = make_cert(["grpc.internal"], issuer=ca, now=now)
    port, h2c = free_port(), free_port()
    with GrpcBackend("g1", tls=(leaf.pem(), leaf.key_pem())) as backend:
        spec = write_spec(
            workdir,
            {
                "nginx": {
                    "flavor": "nginx",
                    "pid": "nginx.pid",
                    "listen": [
                        f"127.0.0.1:{port}",
                        {"host": "127.0.0.1", "port": h2c, "http2": True},
                    ],
                },
                "routes": [
                    {
                        "path": "/grpc.health.v1.Health/",
                        "service": "hc",
                        "protocol": "grpc",
                        "upstream_tls": {"ca": "ca.pem", "sni": "grpc.internal"},
                    }
                ],
            },
            {"hc": [{"id": "g1", "address": backend.address}]},
        )
        conf = workdir / "nginx.conf"
        result = render(spec, conf)
        assert result.returncode == 0, result.stderr
        assert "grpc_pass grpcs://hc;" in conf.read_text()
        nginx_runner(conf, workdir / "nginx.pid", port)
        channel = grpc_channel(h2c)
        try:
            assert health_status(channel) == "SERVING"
        finally:
            channel.close()


def test_an_upstream_client_key_that_does_not_match_is_refused_with_its_line(workdir):
    now = datetime.now(timezone.utc)
    ca = make_ca(now=now)
    _ca_file(workdir, "ca", ca)
    write_pair(workdir, "gw", [make_cert(["gateway"], issuer=ca, now=now, client=True)])
    write_pair(workdir, "other", [make_cert(["other"], issuer=ca, now=now, client=True)])
    tls = {"ca": "ca.pem", "sni": "a.internal", "client_cert": "gw.pem", "client_key": "other.key"}
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": free_port()},
            "routes": [{"path": "/", "service": "x", "upstream_tls": tls}],
        },
        {"x": [{"id": "x1", "address": "127.0.0.1:9"}]},
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 1, result.stderr
    line = next(
        i for i, text in enumerate(spec.read_text().splitlines(), 1) if "client_key" in text
    )
    assert f"nginxgen.yaml:{line}: routes[0].upstream_tls.client_key: the key in " in result.stderr
    assert "does not belong to the certificate" in result.stderr
    assert not conf.exists()


def test_a_cached_cors_route_answers_each_origin_for_itself(workdir, nginx_runner, redis_server):
    """The cache stores the backend's answer, not one origin's CORS headers: a hit for
    another origin gets its own (or none)."""
    require_nginx()
    from tests.integration.cache_gateway import CachedGateways

    gateways = CachedGateways(workdir, nginx_runner, redis_server)
    try:
        gw = gateways(
            routes=[
                {
                    "path": "/c/",
                    "service": "app",
                    "cache": {"ttl": "30s"},
                    "cors": {"origins": ["https://a.test", "https://b.test"]},
                }
            ]
        )
        gw.backend.extra_headers = {"Access-Control-Allow-Origin": "*"}
        first = gw.get("/c/x", headers={"Origin": "https://a.test"})
        assert first.status_code == 200 and first.headers.get("X-Cache") == "MISS"
        assert first.headers["Access-Control-Allow-Origin"] == "https://a.test"
        for origin, want in (("https://b.test", "https://b.test"), ("https://evil.test", None)):
            r = gw.get("/c/x", headers={"Origin": origin})
            assert r.headers.get("X-Cache") == "HIT", origin
            assert r.headers.get("Access-Control-Allow-Origin") == want, origin
            assert r.headers["Vary"] == "Origin"
        assert gw.backend.count == 1
    finally:
        gateways.stop()
