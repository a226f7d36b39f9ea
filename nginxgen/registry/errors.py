"""What can go wrong talking to a registry, in words a person on call can act on.

Every message names the registry and the URL (never its query string, where Nacos puts
its access token) and says what happened in one line; known secrets are scrubbed by the
client before a message is built (see http.Http.scrub).
"""

from __future__ import annotations

import requests


class RegistryError(Exception):
    """A registry call that failed as a whole; the caller keeps what it had and retries.

    The message names the registry and what happened, in one line, without secrets.
    """


class RegistryConfigError(RegistryError):
    """The registry settings cannot work as given (a secret's environment variable is not
    set): a usage error to report once and exit 2 on, not an outage to retry."""


class UnusableVersion(RegistryError):
    """The registry is there but what it holds cannot be used (a broken or missing file).
    `version` is what Source.wait compares with, so a caller backing off wakes on the
    next edit instead of when its backoff runs out."""

    def __init__(self, message: str, version: str) -> None:
        super().__init__(message)
        self.version = version


class HttpStatusError(RegistryError):
    """The registry answered, with a status we did not expect."""

    def __init__(self, message: str, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail  # the registry's own words, already scrubbed


class Gone(RegistryError):
    """The registry no longer holds what the call names: an expired etcd lease, a service
    or check a restarted Consul agent forgot. The writer registers again from scratch."""


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


def printable(text: str) -> str:
    """Server text for a one-line message: whitespace collapsed, control characters out."""
    text = " ".join(text.split())
    return "".join(c if c.isprintable() else "?" for c in text)
