"""Write one instance into etcd v3 (through registry.etcd, the client the source reads with).

Key `<prefix><service>/<instance-id>`, value the instance as JSON, attached to a lease of
`ttl` seconds. The agent keeps the lease alive; when it stops (SIGKILL, crash, lost host)
etcd deletes the key by itself once the lease runs out.
"""

from __future__ import annotations

import json

from ..model.validate import CatalogBuilder
from ..registry.etcd import EtcdClient
from ..sources.etcd import add_kv
from ..spec import EtcdRegistry
from .base import LeaseLost, Record


class EtcdRegistrar:
    def __init__(self, config: EtcdRegistry, service: str, instance_id: str, ttl: float) -> None:
        self.client = EtcdClient(config)
        self.prefix = config.prefix
        self.service, self.instance_id = service, instance_id
        self.key = f"{config.prefix}{service}/{instance_id}".encode()
        self.ttl = max(1, round(ttl))  # etcd leases are whole seconds
        self.lease: str | None = None

    @property
    def name(self) -> str:
        return f"etcd {self.client.endpoint}"

    def register(self, record: Record) -> None:
        old, self.lease = self.lease, self.client.grant(self.ttl)
        self._put(record)
        if old is not None:
            self.client.revoke(old)  # a lease left by an earlier registration

    def update(self, record: Record) -> None:
        if self.lease is None:
            raise LeaseLost("no lease yet")
        self._put(record)

    def heartbeat(self, record: Record) -> None:
        if self.lease is None:
            raise LeaseLost("no lease yet")
        self.client.keepalive(self.lease)

    def deregister(self) -> None:
        self.client.delete(self.key)
        if self.lease is not None:
            self.client.revoke(self.lease)
            self.lease = None

    def listed(self) -> str | None:
        kvs = self.client.range(self.key).get("kvs") or []
        if not isinstance(kvs, list) or not kvs:
            return None
        builder = CatalogBuilder("etcd")
        add_kv(builder, self.prefix, kvs[0])  # the source's own parsing of the value
        found = [
            i for i in builder.build().services.get(self.service, ()) if i.id == self.instance_id
        ]
        return found[0].state if found else None

    def close(self) -> None:
        self.client.close()

    def _put(self, record: Record) -> None:
        value = json.dumps(record.to_json(), separators=(",", ":")).encode("utf-8")
        self.client.put(self.key, value, self.lease)
