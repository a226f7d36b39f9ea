"""The HTTP client every registry call goes through: timeouts, TLS, secrets, one-line errors.

Every failure becomes a RegistryError that names the registry, the URL and what happened.
The URL in messages never carries a query string (Nacos passes its access token there),
and known secrets are scrubbed from any text that came back from the server.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

from ..spec import RegistryTLS
from .errors import HttpStatusError, RegistryConfigError, RegistryError, describe, printable


def secret_value(secret: Any, env: str | None, what: str, where: str) -> str | None:
    """The secret (`registry.<what>`) from the spec, else from the environment variable
    `registry.<what>_env` names. A named variable that is not set is a settings error:
    sending an empty password instead would only fail later, with a misleading message."""
    if secret is not None:
        return str(secret.get_secret_value())
    if env:
        value = os.environ.get(env)
        if value is None:
            raise RegistryConfigError(
                f"{where}: {what} environment variable {env} is not set (registry.{what}_env)"
            )
        return value
    return None


def check_tls_files(tls: RegistryTLS, where: str) -> None:
    """Fail at start, in one sentence, on a CA or certificate file that cannot be read
    (requests would raise a bare OSError at the first request otherwise)."""
    for key in ("ca", "cert", "key"):
        path = getattr(tls, key)
        if path and not os.access(path, os.R_OK):
            what = "no such file" if not os.path.exists(path) else "not readable"
            raise RegistryConfigError(f"{where}: registry.tls.{key} {path}: {what}")


def status_detail(r: requests.Response) -> str:
    """The part of an error answer worth quoting: the start of its body, on one line."""
    return printable(r.text[:160])


class Http:
    """One registry's HTTP client. Sessions are pooled: requests.Session is not thread-safe,
    and the sources run blocking queries from several threads at once."""

    def __init__(
        self,
        registry: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        tls: RegistryTLS,
        headers: Mapping[str, str] | None = None,
        detail: Callable[[requests.Response], str] = status_detail,
    ) -> None:
        self.registry = registry
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tls = tls
        self.headers = dict(headers or {})
        self.detail = detail
        self.secrets: list[str] = []
        self._idle: list[requests.Session] = []
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def _borrow(self) -> requests.Session:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        s = requests.Session()
        s.trust_env = False  # registry traffic never goes through a proxy from the env
        s.verify = self.tls.ca or self.tls.verify
        if self.tls.cert:
            s.cert = (self.tls.cert, self.tls.key) if self.tls.key else self.tls.cert
        with self._lock:
            self._all.append(s)
        return s

    def _give_back(self, s: requests.Session) -> None:
        with self._lock:
            self._idle.append(s)

    def fail(self, url: str, what: str) -> RegistryError:
        return RegistryError(f"{self.registry} {url.split('?', 1)[0]}: {self.scrub(what)}")

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def request(
        self,
        method: str,
        url: str,
        *,
        read_timeout: float | None = None,
        ok: Iterable[int] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """One request; any transport failure or unexpected status → RegistryError."""
        read = self.read_timeout if read_timeout is None else read_timeout
        headers = {**self.headers, **kwargs.pop("headers", {})}
        s = self._borrow()
        try:
            r = s.request(
                method, url, timeout=(self.connect_timeout, read), headers=headers, **kwargs
            )
        except requests.RequestException as exc:
            connect = isinstance(exc, requests.exceptions.ConnectTimeout)
            raise self.fail(url, describe(exc, self.connect_timeout if connect else read)) from None
        except OSError as exc:  # a TLS file that went away since the start
            raise self.fail(url, f"cannot use the TLS files: {exc}") from None
        finally:
            self._give_back(s)
        if r.status_code not in tuple(ok):
            detail = self.scrub(self.detail(r)) if not kwargs.get("stream") else ""
            reason = f"HTTP {r.status_code}" + (f": {detail}" if detail else "")
            raise HttpStatusError(str(self.fail(url, reason)), r.status_code, detail)
        return r

    def json(self, r: requests.Response, url: str) -> Any:
        try:
            return r.json()
        except (ValueError, requests.RequestException):
            raise self.fail(url, "answer is not valid JSON") from None

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close()
            self._all.clear()
            self._idle.clear()


def interrupt(stream: requests.Response) -> None:
    """Wake the thread blocked in recv() on this streamed answer (a watch): closing a
    socket from another thread does not, shutting it down does."""
    conn = getattr(stream.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    stream.close()
