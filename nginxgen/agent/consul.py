"""Register one instance with the local Consul agent and keep its TTL check passing.

Consul's own vocabulary carries the states: a passing TTL check is `up`, a failed one
(`/v1/agent/check/fail`) is `down`, service maintenance mode is `draining` (the readers map
`_service_maintenance:<id>` to draining). `registered_at` and the weight travel in Meta.
If the agent stops heartbeating, the check turns critical after the TTL (no traffic) and
Consul removes the service after `DeregisterCriticalServiceAfter` (Consul's minimum: 1m).
The calls go through registry.consul, the client the source reads with.
"""

from __future__ import annotations

from ..model.validate import split_address
from ..registry.consul import ConsulClient
from ..spec import ConsulRegistry
from .base import DOWN, DRAINING, LeaseLost, Record

DEREGISTER_AFTER = "1m"  # Consul reaps critical services no sooner than one minute


class ConsulRegistrar:
    def __init__(self, config: ConsulRegistry, service: str, instance_id: str, ttl: float) -> None:
        self.client = ConsulClient(config)
        self.service_id = instance_id
        self.check_id = f"service:{instance_id}"
        self.ttl = f"{max(1, round(ttl))}s"
        self.name = f"consul {config.url}"
        self._maintenance = False

    def register(self, record: Record) -> None:
        host, port = split_address(record.address)
        meta = {**dict(record.meta), "registered_at": record.registered_at_iso}
        meta["weight"] = str(record.weight)
        payload = {
            "ID": self.service_id,
            "Name": record.service,
            "Address": host,
            "Port": port,
            "Tags": list(record.tags),
            "Meta": meta,
            "Weights": {"Passing": record.weight, "Warning": 1},
            "Check": {
                "CheckID": self.check_id,
                "Name": f"nginxgen agent heartbeat for {self.service_id}",
                "TTL": self.ttl,
                "DeregisterCriticalServiceAfter": DEREGISTER_AFTER,
            },
        }
        self.client.register(payload)
        self._maintenance = False
        self.update(record)

    def update(self, record: Record) -> None:
        draining = record.state == DRAINING
        if draining != self._maintenance:
            reason = "nginxgen agent: draining before shutdown"
            self.client.maintenance(self.service_id, draining, reason)
            self._maintenance = draining
        self.heartbeat(record)

    def heartbeat(self, record: Record) -> None:
        if record.state == DOWN:
            self.client.check("fail", self.check_id, "health URL failing")
        else:
            self.client.check("pass", self.check_id)

    def deregister(self) -> None:
        try:
            self.client.deregister(self.service_id)
        except LeaseLost:
            pass  # already gone

    def close(self) -> None:
        self.client.close()
