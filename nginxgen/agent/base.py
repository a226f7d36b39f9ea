"""What the agent writes, and what every registry writer provides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ..registry.errors import Gone, RegistryError

# States the agent writes; the same vocabulary every registry reader understands.
STARTING, UP, DOWN, DRAINING = "starting", "up", "down", "draining"
SERVING = (UP, STARTING)  # states a gateway sends requests to
# The meta key that advertises the agent's control endpoint to the gateway.
CONTROL_META = "nginxgen_control"

# The registry layer's errors, under the names the agent's loop reasons with:
# RegistryDown — did not answer, or answered with an error: retry later;
# LeaseLost — no longer holds our registration (lease expired, Consul agent restarted,
# data wiped): register again from scratch. LeaseLost is a kind of RegistryDown.
RegistryDown = RegistryError
LeaseLost = Gone


@dataclass(frozen=True)
class HealthCheck:
    """How the agent checks its unit: `http`/`https` GET `url` (2xx is healthy), or `tcp`
    connect to host:port."""

    kind: str  # "http" | "https" | "tcp"
    url: str | None = None
    host: str = ""
    port: int = 0
    ca: str | None = None  # https: trust only this CA
    insecure: bool = False  # https: verify nothing
    sni: str | None = None  # https: the TLS name, when it is not the URL's host

    @property
    def label(self) -> str:
        """What log lines call it: the URL, or "tcp HOST:PORT"."""
        if self.url is not None:
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp {host}:{self.port}"


@dataclass(frozen=True)
class ControlConfig:
    """The control endpoint (`--control-listen`) and the restarts it can ask for."""

    host: str
    port: int
    token_file: str
    url: str  # advertised as meta.nginxgen_control
    grace: float = 3.0  # after the registry stopped listing the unit
    limit: int = 3  # restarts ...
    window: float = 600.0  # ... per this many seconds
    start_timeout: float = 60.0  # for the restarted program to pass its health check


@dataclass(frozen=True)
class AgentConfig:
    service: str
    instance_id: str
    address: str  # host:port, validated
    weight: int = 1
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    ttl: float = 10.0
    health: HealthCheck | None = None
    health_interval: float = 2.0
    rise: int = 2
    fall: int = 3
    wait_healthy: bool = False
    drain: float = 15.0
    drain_min: float = 2.0
    inflight_url: str | None = None
    stop_timeout: float = 30.0
    command: tuple[str, ...] = ()
    control: ControlConfig | None = None

    @property
    def heartbeat_every(self) -> float:
        """A third of the TTL: two beats can be lost before the registry gives up on us."""
        return max(0.2, self.ttl / 3)

    @property
    def label(self) -> str:
        return f"{self.service}/{self.instance_id}"


@dataclass(frozen=True)
class Record:
    """One instance as the registry should hold it."""

    service: str
    instance_id: str
    address: str
    weight: int
    state: str
    registered_at: datetime
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()

    @classmethod
    def first(cls, config: AgentConfig, state: str, now: datetime) -> Record:
        return cls(
            config.service,
            config.instance_id,
            config.address,
            config.weight,
            state,
            now,
            config.tags,
            config.meta,
        )

    def with_state(self, state: str) -> Record:
        return dataclasses.replace(self, state=state)

    @property
    def registered_at_iso(self) -> str:
        return self.registered_at.isoformat().replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        """The value the etcd and file registries hold (the readers' field names)."""
        return {
            "id": self.instance_id,
            "address": self.address,
            "weight": self.weight,
            "state": self.state,
            "registered_at": self.registered_at_iso,
            "tags": list(self.tags),
            "meta": dict(self.meta),
        }


class Registrar(Protocol):
    """Writes one instance into one registry. Every method may raise RegistryDown."""

    @property
    def name(self) -> str:
        """e.g. "etcd http://10.0.0.1:2379", for log lines."""
        ...

    def register(self, record: Record) -> None:
        """Write the record as a fresh registration (new lease / new service entry)."""
        ...

    def update(self, record: Record) -> None:
        """Change the written record (its state). Raises LeaseLost when it is gone."""
        ...

    def heartbeat(self, record: Record) -> None:
        """Tell the registry we are alive. Raises LeaseLost when the registration is gone."""
        ...

    def deregister(self) -> None:
        """Remove the registration now; a missing one is not an error."""
        ...

    def listed(self) -> str | None:
        """The state this instance is listed in, read the way the gateway's source reads
        it; None when the registry does not list it (or lists something no gateway would
        use)."""
        ...

    def close(self) -> None: ...
