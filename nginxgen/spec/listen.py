"""`nginx.listen`: the addresses the gateway serves HTTP on, plain or TLS.

A listener is a port, `host:port`, or a mapping `{host, port, tls, http2, proxy_protocol,
redirect_to_https}`; `nginx.listen` is one of those or a list of them. Every host is
served on every plain listener, and on every TLS listener when it has a certificate.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from .fields import Model

_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.*-]+):(\d{1,5})$")


def listen_host(value: str) -> str | None:
    """A listen address as nginx writes it: IPv4, [IPv6] or a name; None for every address."""
    text = value.strip()
    if text in ("*", ""):
        return None
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if ip is not None:
        return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    if text.startswith("[") or not _HOSTNAME.match(text) or len(text) > 253:
        raise ValueError(f"must be an IP address or a host name, got {value!r}")
    return text.lower()


def split_address(value: Any) -> tuple[str | None, int]:
    """`8080`, `"8080"`, `"127.0.0.1:8080"`, `"[::1]:8080"`, `"*:80"` → (host, port).

    The messages are the ones `nginx.listen` always gave, since specs and tests quote them.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"must be a port or host:port, got {value!r}")
    text = str(value).strip()
    host: str | None = None
    if re.fullmatch(r"\d{1,5}", text):
        port = int(text)
    else:
        m = _HOST_PORT.match(text)
        if not m:
            raise ValueError(f"must be a port or host:port, got {value!r}")
        host, port = listen_host(m.group(1)), int(m.group(2))
    if not 1 <= port <= 65535:
        raise ValueError(f"port out of range 1-65535: {port}")
    return host, port


def address_text(host: str | None, port: int) -> str:
    """What `listen` says for (host, port): `8080` or `127.0.0.1:8080`."""
    return str(port) if host is None else f"{host}:{port}"


class Listener(Model):
    host: str | None = None  # None: every address (nginx's default)
    port: int = Field(ge=1, le=65535)
    tls: bool = False  # `ssl`: hosts with a certificate, chosen by SNI
    http2: bool = False  # with tls: h2 by ALPN; without: h2c only (nginx < 1.25.1)
    proxy_protocol: bool = False  # connections start with a PROXY header (needs real_ip_from)
    # Plain listener only: hosts that have a certificate answer 308 to their https:// URL.
    redirect_to_https: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return v
        host, port = split_address(v)
        return {"host": host, "port": port}

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, v: Any) -> Any:
        return listen_host(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> Listener:
        if self.redirect_to_https and self.tls:
            raise ValueError("redirect_to_https belongs on a plain listener, not a tls one")
        return self

    @property
    def address(self) -> str:
        return address_text(self.host, self.port)

    def overlaps(self, host: str | None, port: int) -> bool:
        """Whether a socket on (host, port) would take this listener's address."""
        return port == self.port and (host is None or self.host is None or host == self.host)


def listeners_input(value: Any) -> Any:
    """`nginx.listen` as a list: one listener may be written alone."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("list at least one listener, e.g. [8080]")
        return value
    if isinstance(value, dict):
        return [value]
    host, port = split_address(value)  # a bad scalar is reported at nginx.listen itself
    return [{"host": host, "port": port}]


def check_listeners(listeners: tuple[Listener, ...]) -> None:
    seen: set[tuple[str | None, int]] = set()
    for listener in listeners:
        key = (listener.host, listener.port)
        if key in seen:
            raise ValueError(f"two listeners on {listener.address}")
        seen.add(key)
    if any(lst.redirect_to_https for lst in listeners) and not any(lst.tls for lst in listeners):
        raise ValueError("redirect_to_https needs a listener with tls: true to redirect to")


def network(value: str) -> str:
    """An address or CIDR for `set_real_ip_from`, as nginx writes it."""
    try:
        return ipaddress.ip_network(value, strict=True).compressed
    except ValueError as exc:
        raise ValueError(f"not an IP address or CIDR block ({exc}): {value!r}") from None


def resolver_address(value: str) -> str:
    """A DNS server for nginx's `resolver`: an IP address, optionally with :port."""
    text = str(value).strip()
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[0-9.]+)(?::(\d{1,5}))?", text)
    try:
        if m is None:
            raise ValueError
        ipaddress.ip_address(m.group(1).strip("[]"))
        if m.group(2) is not None and not 1 <= int(m.group(2)) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"a resolver is an IP address with an optional port (1.1.1.1, [::1]:53), got {value!r}"
        ) from None
    return text
