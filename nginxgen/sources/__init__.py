"""Registry adapters. Each turns one registry's answer into the same Catalog shape."""

from __future__ import annotations

from collections.abc import Sequence

from ..spec import RegistrySpec
from .base import RegistryError, Source

__all__ = ["RegistryError", "Source", "open_source"]


def open_source(config: RegistrySpec, services: Sequence[str]) -> Source:
    """The adapter for `registry.kind`; `services` are the names the routes need."""
    if config.kind == "file":
        from .file import FileSource

        return FileSource(config, services)
    if config.kind == "consul":
        from .consul import ConsulSource

        return ConsulSource(config, services)
    if config.kind == "etcd":
        from .etcd import EtcdSource

        return EtcdSource(config, services)
    if config.kind == "nacos":
        from .nacos import NacosSource

        return NacosSource(config, services)
    if config.kind == "eureka":
        from .eureka import EurekaSource

        return EurekaSource(config, services)
    if config.kind == "kubernetes":
        from .kubernetes import KubernetesSource

        return KubernetesSource(config, services)
    raise RegistryError(f"registry kind {config.kind!r} is not supported yet")
