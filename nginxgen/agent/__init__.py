"""`nginxgen agent`: the service provider's half of the loop.

Runs next to one unit (a process serving HOST:PORT), registers it in the registry with a
heartbeat, marks it down while its health URL fails, and drains before it deregisters.
"""

from __future__ import annotations

from ..spec import RegistrySpec
from .base import AgentConfig, LeaseLost, Record, Registrar, RegistryDown

__all__ = ["AgentConfig", "LeaseLost", "Record", "Registrar", "RegistryDown", "open_registrar"]

WRITABLE_KINDS = ("etcd", "consul", "file")


def open_registrar(config: RegistrySpec, service: str, instance_id: str, ttl: float) -> Registrar:
    """The writer for `registry.kind`. Raises ValueError for kinds the agent cannot write."""
    if config.kind == "etcd":
        from .etcd import EtcdRegistrar

        return EtcdRegistrar(config, service, instance_id, ttl)
    if config.kind == "consul":
        from .consul import ConsulRegistrar

        return ConsulRegistrar(config, service, instance_id, ttl)
    if config.kind == "file":
        from .file import FileRegistrar

        return FileRegistrar(config, service, instance_id, ttl)
    why = f"supported: {', '.join(WRITABLE_KINDS)}"
    if config.kind == "kubernetes":  # nothing to do: the kubelet registers pods
        why += "; in a cluster the kubelet registers pods, no agent is needed"
    raise ValueError(f"registry kind {config.kind!r} cannot be written by `nginxgen agent` ({why})")
