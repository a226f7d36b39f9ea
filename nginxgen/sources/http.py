"""HTTP plumbing shared by the registry adapters: timeouts, TLS, one-line errors.

Every failure becomes a RegistryError that names the registry, the URL and what happened.
The URL in messages never carries a query string (Nacos passes its access token there),
and known secrets are scrubbed from any text that came back from the server.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import requests

from ..spec import RegistryTLS
from .base import RegistryError

T = TypeVar("T")


def secret_value(secret: Any, env: str | None, what: str, where: str) -> str | None:
    """The secret from the spec, else from the named environment variable."""
    if secret is not None:
        return str(secret.get_secret_value())
    if env:
        value = os.environ.get(env)
        if value is None:
            raise RegistryError(f"{where}: {what} environment variable {env} is not set")
        return value
    return None


def describe(exc: requests.RequestException, timeout: float) -> str:
    """What went wrong, in words, without the URL (which may hold a token)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed (check tls.ca / tls.cert)"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connect timed out after {timeout:g}s"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within {timeout:g}s (read timeout)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Connection refused" in text:
            return "connection refused (is the registry running?)"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "host name does not resolve"
        if "RemoteDisconnected" in text or "Connection aborted" in text:
            return "the server closed the connection"
        return "cannot connect"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    return type(exc).__name__


class HttpStatusError(RegistryError):
    """The registry answered, with a status we did not expect."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Http:
    """One registry's HTTP client. Sessions are pooled: requests.Session is not thread-safe,
    and the adapters run blocking queries from several threads at once."""

    def __init__(
        self,
        registry: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        tls: RegistryTLS,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tls = tls
        self.headers = dict(headers or {})
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
        finally:
            self._give_back(s)
        if r.status_code not in tuple(ok):
            body = printable(r.text[:160]) if not kwargs.get("stream") else ""
            reason = f"HTTP {r.status_code}" + (f": {body}" if body else "")
            raise HttpStatusError(str(self.fail(url, reason)), r.status_code)
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


def printable(text: str) -> str:
    """Server text for a one-line message: whitespace collapsed, control characters out."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else "?" for c in text)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def in_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run fn in a daemon thread. Unlike a ThreadPoolExecutor, a blocking query still in
    flight never holds up interpreter exit."""
    fut: Future[T] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits on the future
            fut.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="nginxgen-registry").start()
    return fut
