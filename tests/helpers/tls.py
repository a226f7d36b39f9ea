"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1 and a client
certificate, made with the openssl command line (scripts/test installs it)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .components import require_component


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
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    client_cert, client_key = _signed(
        directory, "client", "/CN=nginxgen-agent", "extendedKeyUsage=clientAuth\n"
    )
    return TlsFiles(directory / "ca.crt", server_cert, server_key, client_cert, client_key)
