"""nginxgen.util.checks: one TCP, HTTP or HTTPS check of a unit, against real local servers."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from nginxgen.util.checks import check_http, check_tcp, tls_context
from tests.helpers import free_port
from tests.helpers.agent import TcpServer
from tests.helpers.tls import SERVER_NAME, HttpsServer, TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https(pki: TlsFiles) -> Iterator[HttpsServer]:
    server = HttpsServer(pki)
    yield server
    server.stop()


def test_tcp_connects_and_then_is_refused():
    unit = TcpServer()
    result = check_tcp("127.0.0.1", unit.port, 1.0)
    assert (result.ok, result.detail) == (True, "connected")
    unit.stop_accepting()
    result = check_tcp("127.0.0.1", unit.port, 1.0)
    assert (result.ok, result.detail) == (False, "connection refused")


def test_http_status_decides(backends):
    app = backends("app")
    assert check_http(f"http://{app.address}/healthz", 1.0).detail == "HTTP 200"
    app.health_status = 503
    result = check_http(f"http://{app.address}/healthz", 1.0)
    assert (result.ok, result.detail) == (False, "HTTP 503")
    assert check_http(f"http://{app.address}/healthz", 1.0, expect=(503,)).ok
    closed = check_http(f"http://127.0.0.1:{free_port()}/", 1.0)
    assert (closed.ok, closed.detail) == (False, "connection refused")


def test_a_unit_that_accepts_but_never_answers_times_out():
    listener = socket.create_server(("127.0.0.1", 0))  # never accept()ed, never answered
    port = listener.getsockname()[1]
    try:
        result = check_http(f"http://127.0.0.1:{port}/healthz", 0.3)
    finally:
        listener.close()
    assert (result.ok, result.detail) == (False, "no answer within 0.3s")
    assert 0.25 <= result.elapsed < 5


def test_the_deadline_covers_the_whole_check_by_the_given_clock(backends):
    app = backends("app")
    ticks = iter([0.0, 0.0, 5.0, 5.0, 5.0])  # connected at 0; the answer is due by 2
    result = check_http(f"http://{app.address}/healthz", 2.0, clock=lambda: next(ticks))
    assert (result.ok, result.detail) == (False, "no answer within 2s")


def test_https_with_the_units_ca(https, pki):
    context = tls_context(str(pki.ca))
    assert check_http(https.url(), 1.0, context=context).detail == "HTTP 200"
    https.status = 500
    assert check_http(https.url(), 1.0, context=context).detail == "HTTP 500"


def test_https_refuses_a_certificate_it_cannot_trust(https):
    result = check_http(https.url(), 1.0)  # the system CAs do not know the test CA
    assert not result.ok
    assert result.detail.startswith("TLS certificate not accepted: ")
    insecure = check_http(https.url(), 1.0, context=tls_context(verify=False))
    assert insecure.ok


def test_sni_is_sent_and_verified(https, pki):
    context = tls_context(str(pki.ca))
    assert check_http(https.url(), 1.0, context=context, sni=SERVER_NAME).ok
    assert SERVER_NAME in https.names
    wrong = check_http(https.url(), 1.0, context=context, sni="other.nginxgen.test")
    assert not wrong.ok and "Hostname mismatch" in wrong.detail


def test_plain_http_to_a_tls_port_fails_in_one_line(https):
    result = check_http(https.url().replace("https:", "http:"), 1.0)
    assert not result.ok
    assert result.detail.isprintable() and "<" not in result.detail  # no object reprs


def test_a_bad_ca_file_is_an_error_at_setup(tmp_path: Path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        tls_context(str(bad))
    with pytest.raises(OSError):
        tls_context(str(tmp_path / "missing.pem"))
