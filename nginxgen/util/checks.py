"""One check of a unit, by kind: a TCP connect, an HTTP GET, an HTTPS GET.

Shared by the agent's health check and meant for the gateway's probes: each function
makes one attempt within one overall deadline and returns a verdict with a short reason;
it never raises for anything the unit or the network does. The standard library only
(socket, ssl, http.client): no proxy settings apply, and the TLS name (SNI) can differ
from the address dialled, as with nginx's `proxy_ssl_name`.

What is not promised: a TCP check proves the port accepts connections, not that the
application behind it answers (the kernel completes handshakes for a listener whose
program has stopped calling accept(), until its backlog is full).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from urllib.parse import urlsplit

Clock = Callable[[], float]
SUCCESS = range(200, 300)
USER_AGENT = "nginxgen-check"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str  # "HTTP 200", "connected", "connection refused", "no answer within 2s", ...
    elapsed: float  # seconds, by the clock the check was given


def tls_context(ca: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client context: trust `ca` only when given (else the system's CAs), or nothing is
    verified at all with verify=False. Build it once and reuse it for every check.
    Raises OSError / ssl.SSLError when the CA file cannot be read or parsed."""
    context = ssl.create_default_context(cafile=ca)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def check_tcp(
    host: str, port: int, timeout: float, *, clock: Clock = time.monotonic
) -> CheckResult:
    """Healthy when a TCP connection to host:port is established within `timeout`."""
    start = clock()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return CheckResult(False, _reason(exc, "connection", timeout), clock() - start)
    return CheckResult(True, "connected", clock() - start)


def check_http(
    url: str,
    timeout: float,
    *,
    context: ssl.SSLContext | None = None,
    sni: str | None = None,
    expect: Container[int] = SUCCESS,
    clock: Clock = time.monotonic,
) -> CheckResult:
    """One GET of `url` (http:// or https://); healthy when the status is in `expect`
    (2xx by default) and the answer's head arrives within `timeout` of the start.

    https: `context` decides what is trusted (default: the system's CAs); `sni` is the
    name sent in the TLS handshake and checked against the certificate (default: the
    URL's host). Redirects are not followed: a 301 is a 301.
    """
    start = clock()
    deadline = start + timeout
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return CheckResult(False, f"bad URL {url!r}", 0.0)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    phase = "connection"
    conn: http.client.HTTPConnection | None = None

    def remaining() -> float:
        left = deadline - clock()
        if left <= 0:
            raise TimeoutError()
        return left

    try:
        sock = socket.create_connection((host, port), timeout=remaining())
        if parts.scheme == "https":
            phase = "TLS handshake"
            sock.settimeout(remaining())
            sock = (context or tls_context()).wrap_socket(sock, server_hostname=sni or host)
        phase = "answer"
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock  # connected (and wrapped) above: http.client only talks
        sock.settimeout(remaining())
        conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Connection": "close"})
        sock.settimeout(remaining())
        response = conn.getresponse()
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return CheckResult(False, _reason(exc, phase, timeout), clock() - start)
    finally:
        if conn is not None:
            conn.close()
    return CheckResult(status in expect, f"HTTP {status}", clock() - start)


def _reason(exc: BaseException, phase: str, timeout: float) -> str:
    """One short line for what went wrong; never an object repr."""
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no {phase} within {timeout:g}s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or type(exc).__name__}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return f"connection reset during the {phase}"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, http.client.HTTPException):
        return f"no valid HTTP answer ({type(exc).__name__})"
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return str(text).lower()
