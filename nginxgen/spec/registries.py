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
    # Where nginxgen keeps its own entries in Consul's KV store (split overrides under
    # `<kv_prefix>split/<service>`, docs/split.md); read with the catalog.
    kv_prefix: str = Field("nginxgen/", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/$")


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


# Kubernetes names: a Service is an RFC 1035 label, a namespace an RFC 1123 label.
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# A label selector as the API server parses it: `k`, `!k`, `k=v`, `k==v`, `k!=v`,
# `k in (v1,v2)`, `k notin (v1,v2)`, joined by commas.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}"
_VALUE = rf"({_NAME})?"
_REQUIREMENT = (
    rf"(!\s*{_KEY}|{_KEY}\s*((==?|!=)\s*{_VALUE}|\s(in|notin)\s*\(\s*{_VALUE}"
    rf"(\s*,\s*{_VALUE})*\s*\))?)"
)
_SELECTOR = re.compile(rf"\s*{_REQUIREMENT}(\s*,\s*{_REQUIREMENT})*\s*")


def is_service_name(value: str) -> bool:
    """A name a Kubernetes Service can have (an RFC 1035 label)."""
    return bool(_SERVICE_NAME.fullmatch(value))


def _matches(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"not a valid Kubernetes {what}: {value!r}")
        return value

    return AfterValidator(check)


class KubernetesRegistry(Model):
    """EndpointSlices (discovery.k8s.io/v1) of one namespace; the defaults are the pod's own
    service account, so in a cluster `kind: kubernetes` alone is enough."""

    kind: Literal["kubernetes"]
    api: HttpUrl | None = None  # default https://$KUBERNETES_SERVICE_HOST:$..._PORT
    namespace: Annotated[str, _matches(_NAMESPACE, "namespace")] | None = None
    token_file: SpecPath | None = None  # default: the service account token (re-read)
    ca_file: SpecPath | None = None  # default: the service account's ca.crt
    # Which Services: these names, or the EndpointSlices a label selector matches (the
    # EndpointSlice controller copies a Service's labels onto its slices); neither: the
    # services the routes name.
    services: tuple[Annotated[str, _matches(_SERVICE_NAME, "service name")], ...] | None = None
    selector: Annotated[str, _matches(_SELECTOR, "label selector")] | None = None
    port: str | None = None  # the port name for every service; default: the only port
    ports: dict[str, str] = {}  # per service: {users: http}
    connect_timeout: Duration = 2.0
    read_timeout: Duration = 5.0
    watch_timeout: Duration = 300.0  # asked of the API server per watch (timeoutSeconds)

    @model_validator(mode="after")
    def _choice(self) -> KubernetesRegistry:
        if self.services is not None and self.selector is not None:
            raise ValueError("use services or selector, not both")
        if self.services is not None:
            unknown = sorted(set(self.ports) - set(self.services))
            if unknown:
                raise ValueError(f"ports names services not in services: {', '.join(unknown)}")
        if self.watch_timeout < 1:
            raise ValueError("watch_timeout must be at least 1s")
        return self


RegistrySpec = Annotated[
    FileRegistry
    | ConsulRegistry
    | EtcdRegistry
    | NacosRegistry
    | EurekaRegistry
    | KubernetesRegistry,
    Field(discriminator="kind"),
]
REGISTRY_KINDS = ("file", "consul", "etcd", "nacos", "eureka", "kubernetes")
