"""`registry:` — which registry feeds the catalog, and how to reach it."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)
from pydantic.functional_validators import AfterValidator

from .fields import Duration, Model, SpecPath, Token


class FileRegistry(Model):
    kind: Literal["file"]
    path: SpecPath
    poll: Duration = 1.0


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"must be an http:// or https:// URL without query, got {value!r}")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class RegistryTLS(Model):
    """TLS to the registry: a private CA, and a client certificate when it asks for one."""

    ca: SpecPath | None = None
    cert: SpecPath | None = None
    key: SpecPath | None = None
    verify: bool = True  # false only for throwaway test clusters

    @model_validator(mode="after")
    def _pair(self) -> RegistryTLS:
        if self.key and not self.cert:
            raise ValueError("tls.key needs tls.cert")
        return self


class _NetworkRegistry(Model):
    # Short by default: a registry that does not answer quickly is treated as down, and
    # the caller keeps serving its last good catalog.
    connect_timeout: Duration = 2.0
    read_timeout: Duration = 5.0
    tls: RegistryTLS = RegistryTLS()


class _Credentials(Model):
    username: str | None = None
    password: SecretStr | None = None  # prefer password_env: secrets stay out of the spec
    password_env: str | None = None


class ConsulRegistry(_NetworkRegistry):
    kind: Literal["consul"]
    url: HttpUrl = "http://127.0.0.1:8500"
    token: SecretStr | None = None
    token_env: str = "CONSUL_HTTP_TOKEN"
    datacenter: Token | None = None
    services: tuple[str, ...] | None = None  # default: every service in the catalog
    tag: str | None = None  # only services (and instances) carrying this tag
    stale: bool = False  # let any server answer (faster, may lag the leader slightly)
    warning: Literal["up", "draining", "down"] = "up"  # state for a warning check
    # Pace of blocking queries per service once Consul answers faster than changes matter
    # (burst of 2, then one per min_interval); the quiet case is never delayed.
    min_interval: Duration = 1.0


class EtcdRegistry(_NetworkRegistry, _Credentials):
    kind: Literal["etcd"]
    url: HttpUrl | None = None
    endpoints: tuple[HttpUrl, ...] = ()
    prefix: str = "/services/"

    @model_validator(mode="after")
    def _endpoints(self) -> EtcdRegistry:
        if self.url and self.endpoints:
            raise ValueError("use url or endpoints, not both")
        if not self.prefix.endswith("/"):
            raise ValueError(f"prefix must end with '/', got {self.prefix!r}")
        return self

    @property
    def all_endpoints(self) -> tuple[str, ...]:
        return self.endpoints or (self.url or "http://127.0.0.1:2379",)


class NacosRegistry(_NetworkRegistry, _Credentials):
    kind: Literal["nacos"]
    url: HttpUrl = "http://127.0.0.1:8848"
    namespace: str = ""  # namespaceId; empty is Nacos' "public"
    group: str = "DEFAULT_GROUP"
    services: tuple[str, ...] | None = None  # default: every service in namespace+group
    poll: Duration = 2.0


class EurekaRegistry(_NetworkRegistry, _Credentials):
    kind: Literal["eureka"]
    url: HttpUrl = "http://127.0.0.1:8761/eureka"  # the base that /apps hangs off
    poll: Duration = 5.0
    prefer_ip: bool = True  # ipAddr rather than hostName


RegistrySpec = Annotated[
    FileRegistry | ConsulRegistry | EtcdRegistry | NacosRegistry | EurekaRegistry,
    Field(discriminator="kind"),
]
REGISTRY_KINDS = ("file", "consul", "etcd", "nacos", "eureka")
