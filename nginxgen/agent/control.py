"""The agent's control endpoint: `POST /restart` and `GET /status`, behind a bearer token.

A small threaded HTTP server from the standard library. Every request needs
`Authorization: Bearer <token>`, the token compared in constant time with the one in
`--control-token-file`. What is refused changes nothing: an unknown path is 404, a known
path with another method 405, a missing or wrong token 401. The token is never logged,
and neither is the Authorization header; the file is re-read when it changes, so it can
be rotated without restarting the agent (a replacement the agent would refuse at start
keeps the previous token, and says so).

What is not promised: the endpoint speaks plain HTTP. Listen on a private interface, or
put a TLS proxy in front and advertise its https:// URL with --control-advertise.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ..model.validate import label
from ..util import token_file
from .restart import Answer, RestartDesk

Log = Callable[[str], None]

MAX_BODY = 65536  # a POST body is read (and ignored) up to this size
REQUEST_TIMEOUT = 10.0  # seconds a client gets to send its request
ROUTES = {"/restart": "POST", "/status": "GET"}


class ControlError(Exception):
    """The control endpoint cannot start; str() is one sentence for the operator."""


def read_token(path: str) -> bytes:
    """The token in --control-token-file `path` (see util.token_file for the rules)."""
    try:
        return token_file.read_token(path, f"--control-token-file {path}")
    except token_file.TokenFileError as exc:
        raise ControlError(str(exc)) from None


class TokenFile:
    """The token, re-read when the file changes (inode, size, mtime or mode)."""

    def __init__(self, path: str, log: Log) -> None:
        self.path = path
        self.log = log
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._token = read_token(path)  # raises ControlError: refused at start

    def _stat(self) -> tuple[int, ...] | None:
        try:
            s = os.stat(self.path)
        except OSError:
            return None
        return (s.st_ino, s.st_size, s.st_mtime_ns, s.st_mode)

    def current(self) -> bytes:
        with self._lock:
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._token = read_token(self.path)
                except ControlError as exc:
                    self.log(f"control: {exc}; keeping the token read before")
                else:
                    self.log(f"control: {self.path} changed; using the token it holds now")
            return self._token

    def matches(self, given: bytes) -> bool:
        return hmac.compare_digest(given, self.current())


class ControlServer:
    """Serves the desk's answers on host:port in a daemon thread; `close()` stops it."""

    def __init__(
        self, host: str, port: int, tokens: TokenFile, desk: RestartDesk, log: Log
    ) -> None:
        handler = _handler(tokens, desk, log)
        server_class = _Server6 if ":" in host else _Server
        try:
            self.server = server_class((host, port), handler)
        except OSError as exc:
            why = (exc.strerror or str(exc)).lower()
            raise ControlError(f"--control-listen {host}:{port}: cannot listen: {why}") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            args=(0.2,),  # how soon close() is noticed
            daemon=True,
            name="nginxgen-agent-control",
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler(tokens: TokenFile, desk: RestartDesk, log: Log) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT

        def version_string(self) -> str:
            return "nginxgen-agent"  # no Python version for callers to fingerprint

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the outcome is logged below, without headers

        def _handle(self) -> None:
            peer = self.client_address[0]
            path = urlsplit(self.path).path
            method = ROUTES.get(path)
            too_big = self._discard_body()
            if method is None:
                answer = Answer(404, {"error": "not found"})
            elif too_big:
                answer = Answer(413, {"error": f"a body is read up to {MAX_BODY} bytes"})
            elif self.command != method:
                answer = Answer(405, {"error": f"use {method}"}, (("Allow", method),))
            else:
                answer = self._authorized(peer, path) or (
                    Answer(200, desk.status()) if path == "/status" else desk.request(peer)
                )
            if answer.status in (404, 405, 413):
                log(f"control: {self.command} {label(path)} from {peer}: {answer.status}")
            self._send(answer)

        def _authorized(self, peer: str, path: str) -> Answer | None:
            """None when the bearer token is right, else the 401 to send."""
            scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
            given = value.strip().encode("latin-1", "replace")
            if scheme.lower() == "bearer" and given and tokens.matches(given):
                return None
            why = "wrong token" if scheme.lower() == "bearer" and given else "no bearer token"
            log(f"control: {self.command} {path} from {peer}: 401 ({why})")
            return Answer(
                401,
                {"error": "a valid bearer token is required"},
                (("WWW-Authenticate", 'Bearer realm="nginxgen-agent"'),),
            )

        def _discard_body(self) -> bool:
            """Read the body (no route takes one) up to MAX_BODY; True when it is larger,
            or its size is not given by one Content-Length. Then the request changes
            nothing, and the connection is closed on whatever was not read."""
            if self.headers.get("Transfer-Encoding"):
                return True
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return True
            if not 0 <= length <= MAX_BODY:
                return True
            if length:
                self.rfile.read(length)
            return False

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """What http.server refuses itself (a bad request line, headers too long, an
            unknown method) is answered in JSON too."""
            self._send(Answer(code, {"error": (message or self.responses.get(code, ("",))[0])}))

        def _send(self, answer: Answer) -> None:
            payload = (json.dumps(answer.body, indent=2) + "\n").encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            except OSError:
                pass  # the client went away
            self.close_connection = True

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    return Handler
