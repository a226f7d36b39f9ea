"""Rendering the HTTP surface and streams: the servers, listeners and blocks planned,
and a round trip that refuses any server, stream or snippet other than planned."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import BuildCache, build
from nginxgen.spec import parse_spec
from nginxgen.verify import verify
from tests.helpers.certs import make_ca, make_cert, write_pair

NOW = datetime.now(timezone.utc)


def spec_text(tmp_path: Path, cert_days: int = 90, key_of: str = "a") -> str:
    ca = make_ca(now=NOW)
    leaf = make_cert(["a.test"], issuer=ca, now=NOW, not_after=timedelta(days=cert_days))
    other = make_cert(["a.test"], issuer=ca, now=NOW)
    write_pair(tmp_path, "a", [leaf], key=leaf if key_of == "a" else other)
    write_pair(tmp_path, "b", [make_cert(["*.b.test"], issuer=ca, now=NOW)])
    return """\
registry: {kind: file, path: s.yaml}
nginx:
  listen:
    - {host: 127.0.0.1, port: 8080, redirect_to_https: true}
    - {host: 127.0.0.1, port: 8443, tls: true, http2: true}
snippets: {http: "map $request_method $x { default a; }"}
services: {users: {snippets: "keepalive_timeout 30s;"}}
hosts:
  - server_names: [a.test]
    tls: {cert: a.pem, key: a.key, hsts: true}
    routes:
      - {path: /, service: users}
      - {path: /ws/, service: users, websocket: true}
      - {path: "^/rx/[0-9]+$", match: regex, service: users}
  - server_names: ["*.b.test"]
    tls: {cert: b.pem, key: b.key}
    snippets: "set $y b;"
    routes:
      - {path: /api/, service: orders, snippets: 'add_header X-Y "$x,$y" always;'}
      - {path: /g/, service: grpc, protocol: grpc}
streams:
  - {listen: "127.0.0.1:5432", service: db}
  - {listen: "127.0.0.1:5353", service: db, protocol: udp, responses: 1}
"""


def catalog():
    b = CatalogBuilder("t")
    b.add("users", id="u1", address="127.0.0.1:9001")
    b.add("orders", id="o1", address="127.0.0.1:9002")
    b.add("grpc", id="g1", address="127.0.0.1:9003")
    b.add("db", id="d1", address="127.0.0.1:9004")
    return b.build()


@pytest.fixture
def built(tmp_path: Path):
    spec = parse_spec(spec_text(tmp_path), tmp_path / "nginxgen.yaml")
    return build(spec, catalog(), binary=None, cache=BuildCache(), now=NOW)


def test_each_host_gets_its_server_on_its_listeners(built) -> None:
    assert built.verdict.ok, built.verdict.findings
    s = built.plan.surface
    assert [srv.names for srv in s.servers] == [("a.test",), ("*.b.test",)]
    assert [lst.args for lst in s.servers[0].listens] == [["127.0.0.1:8443", "ssl", "http2"]]
    assert [r.names for r in s.redirects] == [("a.test", "*.b.test")]
    # No default host: unknown names go to servers that never proxy, default everywhere.
    assert [(u.tls, [lst.args for lst in u.listens]) for u in s.unknown] == [
        (False, [["127.0.0.1:8080", "default_server"]]),
        (True, [["127.0.0.1:8443", "ssl", "http2", "default_server"]]),
    ]
    text = built.text
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in text and "ssl_session_tickets off;" in text
    assert "return 308 https://$host:8443$request_uri;" in text
    assert "ssl_reject_handshake on;" in text
    assert 'location ~ "^/rx/[0-9]+$" {' in text
    assert "proxy_set_header Connection $nginxgen_connection;" in text
    assert "grpc_pass grpc://grpc;" in text
    # HTTP upstreams and stream upstreams are apart; a service may feed one of each.
    assert {u.name for u in built.plan.upstreams} == {"users", "orders", "grpc"}
    stream = s.stream
    assert stream is not None and [u.name for u in stream.upstreams] == ["db"]
    assert "listen 127.0.0.1:5353 udp;" in text and "proxy_responses 1;" in text


def test_a_spec_without_the_new_keys_renders_one_server_as_before(tmp_path: Path) -> None:
    spec = parse_spec(
        "registry: {kind: file, path: s.yaml}\nnginx: {listen: 8080}\n"
        "routes: [{path: /a/, service: users}]\n",
        tmp_path / "nginxgen.yaml",
    )
    text = build(spec, catalog(), binary=None, cache=BuildCache()).text
    assert text.count("server_name _;") == 1 and "default_server" not in text
    assert "listen 8080;" in text and "ssl_" not in text and "stream {" not in text


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (
            "listen 127.0.0.1:8443 ssl http2;\n        server_name a.test;",
            "listen 127.0.0.1:8444 ssl http2;\n        server_name a.test;",
            "listens on",
        ),
        (
            "ssl_certificate_key",
            "ssl_certificate /etc/evil.pem;\n        ssl_certificate_key",
            "another certificate",
        ),
        ('add_header X-Y "$x,$y" always;', 'add_header X-Y "$x" always;', "snippet"),
        ("keepalive_timeout 30s;", "keepalive_timeout 31s;", "snippet"),
        ("return 308 https", "add_header X-A 1 always;\n        return 308 https", "redirect"),
        ("proxy_pass db;", "proxy_pass users;", "stream 127.0.0.1:5432"),
        ("grpc_pass grpc://grpc;", "grpc_pass grpc://users;", "proxies to"),
    ],
)
def test_the_round_trip_refuses_what_was_not_planned(built, old, new, complaint) -> None:
    assert old in built.text
    verdict = verify(built.text.replace(old, new, 1), built.plan)
    assert not verdict.ok
    assert any(complaint in str(f) for f in verdict.findings), verdict.findings


@pytest.mark.parametrize(
    ("days", "key_of", "words"),
    [(-1, "a", "expired"), (90, "other", "key")],
)
def test_a_bad_certificate_stops_the_render_with_its_spec_line(
    tmp_path: Path, days: int, key_of: str, words: str
) -> None:
    if days < 0:
        text = spec_text(tmp_path)
        ca = make_ca(now=NOW - timedelta(days=100))
        old = make_cert(["a.test"], issuer=ca, now=NOW - timedelta(days=100))
        write_pair(tmp_path, "a", [old])  # valid for 90 days from 100 days ago
    else:
        text = spec_text(tmp_path, key_of=key_of)
    spec = parse_spec(text, tmp_path / "nginxgen.yaml")
    result = build(spec, catalog(), binary=None, cache=BuildCache(), now=NOW)
    assert not result.verdict.ok and result.text == ""
    (finding,) = result.verdict.findings
    message = str(finding)
    assert f"{tmp_path / 'nginxgen.yaml'}:10: hosts[0].tls." in message
    assert words in message
