"""`streams:` — TCP and UDP listeners proxied to a registry service (nginx's stream {}).

The service's instances feed a stream upstream the way they feed an HTTP one: weights,
warm-up, drain and passive health come from `services: {NAME: ...}` and `defaults`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .fields import Duration, Model, ServiceName
from .listen import address_text, split_address
from .snippets import StreamServerSnippet


class StreamFailover(Model):
    """`proxy_next_upstream`: a connection that cannot be made goes to the next instance."""

    enabled: bool = True
    tries: int = Field(2, ge=1)
    timeout: Duration = 0.0  # 0: no limit on the time spent trying
    max_tries: int = Field(5, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return {"enabled": False} if v in ("off", False) else v

    @model_validator(mode="after")
    def _check(self) -> StreamFailover:
        if self.tries > self.max_tries:
            raise ValueError(f"tries {self.tries} exceeds max_tries {self.max_tries}")
        return self


class StreamTimeouts(Model):
    connect: Duration = 5.0  # proxy_connect_timeout
    idle: Duration = 600.0  # proxy_timeout: silence in both directions that ends a session


class Stream(Model):
    listen: str  # port or host:port
    service: ServiceName
    protocol: Literal["tcp", "udp"] = "tcp"
    failover: StreamFailover = StreamFailover()
    timeouts: StreamTimeouts = StreamTimeouts()
    responses: int | None = Field(None, ge=1)  # UDP: datagrams that end a session (DNS: 1)
    snippets: StreamServerSnippet | None = None  # inside this stream's server {}

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, v: Any) -> str:
        return address_text(*split_address(v))

    @model_validator(mode="after")
    def _check(self) -> Stream:
        if self.responses is not None and self.protocol != "udp":
            raise ValueError("responses counts UDP datagrams; it needs protocol: udp")
        return self

    @property
    def host(self) -> str | None:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]


# Balancing a stream upstream knows: no ip_hash, and hash keys are connection variables.
STREAM_HASH_KEYS = ("$remote_addr", "$binary_remote_addr")


def stream_balance_problem(balance: str) -> str | None:
    words = balance.split()
    if words[0] == "ip_hash":
        return "stream upstreams have no ip_hash; use 'hash $remote_addr consistent'"
    if words[0] == "hash" and words[1] not in STREAM_HASH_KEYS:
        return (
            f"a stream upstream can only hash on {' or '.join(STREAM_HASH_KEYS)} "
            f"(there is no HTTP request), got {words[1]!r}"
        )
    return None
