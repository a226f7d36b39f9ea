"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1 and a client
certificate, made with the openssl command line (scripts/test installs it)."""

from __future__ import annotations

import ssl
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .components import require_component

# A DNS name the server certificate is also good for (SNI tests dial 127.0.0.1 with it).
SERVER_NAME = "unit.nginxgen.test"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl() -> str:
    """openssl next to the interpreter first, then on PATH. Missing is a failure: the
    test script installs it."""
    return require_component("openssl")


def _run(*args: str) -> None:
    subprocess.run([openssl(), *args], check=True, capture_output=True, timeout=60)


def _signed(directory: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _run(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", str(key), "-out", str(csr), "-subj", subject),
    )
    _run(
        *("x509", "-req", "-in", str(csr), "-CA", str(directory / "ca.crt")),
        *("-CAkey", str(directory / "ca.key"), "-CAcreateserial", "-days", "2"),
        *("-out", str(cert), "-extfile", str(ext)),
    )
    return cert, key


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    _run(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-nodes", "-days", "2", "-subj", "/CN=nginxgen test CA"),
        *("-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt")),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    # etcd's JSON gateway dials etcd itself with the server certificate: it must be good
    # for client authentication too once --client-cert-auth is on.
    server_cert, server_key = _signed(
        directory,
        "server",
        "/CN=127.0.0.1",
        f"subjectAltName=IP:127.0.0.1,DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    client_cert, client_key = _signed(
        directory, "client", "/CN=nginxgen-agent", "extendedKeyUsage=clientAuth\n"
    )
    return TlsFiles(directory / "ca.crt", server_cert, server_key, client_cert, client_key)


class HttpsServer:
    """A local HTTPS server with the test PKI's server certificate. Every path answers
    `status` (change it while it runs); `names` collects the SNI names clients sent."""

    def __init__(self, tls: TlsFiles) -> None:
        self.status = 200
        self.names: list[str | None] = []
        https = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(https.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
        context.sni_callback = lambda sock, name, ctx: self.names.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def url(self, path: str = "/healthz") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
