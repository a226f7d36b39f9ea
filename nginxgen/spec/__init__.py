"""nginxgen.yaml → Spec, validated, with errors that name the file, key and line.

Two override levels mirror nginx's own: location-level settings (failover, timeouts)
live on `routes` and fall back to `defaults`; upstream-level settings (health, keepalive)
live in `services: {NAME: ...}` and fall back to `defaults`. Fallback is per key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..util.yaml_load import SafeLoader, YamlError, load_yaml
from .cache import CacheSpec, L1Cache, RedisSpec, identity_problem
from .fields import DEFAULT_SPEC, Duration, Model, SpecError, SpecPath, Token, parse_duration
from .gateway import ApiKeys, Auth, OptionalLimitConn, OptionalRateLimit, RateLimit
from .nginx import NginxSpec
from .policies import (
    HASH_KEY,
    NEXT_UPSTREAM,
    NO_BACKUP_METHODS,
    ROUTE_KEYS,
    SERVICE_KEYS,
    Defaults,
    Failover,
    Health,
    Probe,
    Recovery,
    ServicePolicy,
    Timeouts,
    Warmup,
    balance_args,
)
from .registries import (
    REGISTRY_KINDS,
    ConsulRegistry,
    EtcdRegistry,
    EurekaRegistry,
    FileRegistry,
    KubernetesRegistry,
    NacosRegistry,
    RegistrySpec,
    RegistryTLS,
)
from .watch import Backoff, Debounce, RemovalGuard, WatchSpec


class SpecLoader(SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `on:` (failover) as True."""


def _no_duplicate_keys(loader: Any, node: Any, deep: bool = False) -> Any:
    """PyYAML keeps the last of two equal keys silently; a spec must not."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`: merged keys may be overridden, that is the point
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return SafeLoader.construct_mapping(loader, node, deep)


SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)
SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class Route(Model):
    path: str
    service: str
    exact: bool = False  # `location = path` instead of a prefix match
    strip_prefix: bool = False  # send the path without the route prefix upstream
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()
    client_max_body_size: Token | None = None
    rate_limit: OptionalRateLimit = None
    limit_conn: OptionalLimitConn = None
    auth: Auth | None = None
    cache: CacheSpec | None = None

    @model_validator(mode="after")
    def _rate_key_needs_api_keys(self) -> Route:
        if self.rate_limit and self.rate_limit.key == "api_key":
            if self.auth is None or self.auth.api_keys is None:
                raise ValueError("rate_limit.key api_key needs auth.api_keys on the same route")
        return self

    @model_validator(mode="after")
    def _cache_keys_on_identity(self) -> Route:
        if self.cache is not None:
            auth = self.auth
            forwarded = auth.forward_headers if auth else ()
            problem = identity_problem(self.cache, forwarded, bool(auth and auth.api_keys))
            if problem:
                raise ValueError(problem)
        return self

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~!&'()*+,=:@%/-]*", v) or "'" in v:
            raise ValueError(f"must start with '/' and hold only URL path characters: {v!r}")
        return v

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        from ..model.validate import is_safe_name

        if not is_safe_name(v):
            raise ValueError(f"not a valid service name: {v!r}")
        return v


class Spec(Model):
    registry: RegistrySpec
    # dict defaults are validated like user input, so default paths resolve against the spec.
    nginx: NginxSpec = Field(default_factory=dict)  # type: ignore[assignment]
    defaults: Defaults = Defaults()
    services: dict[str, ServicePolicy] = {}
    routes: tuple[Route, ...] = Field(min_length=1)
    redis: RedisSpec | None = None
    watch: WatchSpec = WatchSpec()
    source_path: str = ""  # set by load_spec; where this spec came from

    @model_validator(mode="before")
    @classmethod
    def _inherit_defaults(cls, data: Any) -> Any:
        """Fill each route and service from `defaults`, key by key."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            return data
        routes = data.get("routes")
        if isinstance(routes, list):
            data = {**data, "routes": [_inherit(r, defaults, ROUTE_KEYS) for r in routes]}
        services = data.get("services")
        if isinstance(services, dict):
            data = {
                **data,
                "services": {k: _inherit(v, defaults, SERVICE_KEYS) for k, v in services.items()},
            }
        return data

    @field_validator("routes")
    @classmethod
    def _unique_paths(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        seen: set[tuple[bool, str]] = set()
        for route in routes:
            key = (route.exact, route.path)
            if key in seen:
                raise ValueError(f"two routes have the same path {route.path!r}")
            seen.add(key)
        return routes

    @model_validator(mode="after")
    def _cache_needs_redis(self) -> Spec:
        cached = [r.path for r in self.routes if r.cache is not None]
        if cached and self.redis is None:
            raise ValueError(
                f"route {cached[0]!r} has a cache but the spec has no top-level "
                "`redis:` section (e.g. redis: {host: 127.0.0.1, port: 6379})"
            )
        return self

    def service_policy(self, name: str) -> ServicePolicy:
        if name in self.services:
            return self.services[name]
        d = self.defaults
        return ServicePolicy(
            health=d.health,
            keepalive=d.keepalive,
            warmup=d.warmup,
            probe=d.probe,
            balance=d.balance,
        )

    @property
    def service_names(self) -> list[str]:
        """Services the routes need, in route order, without repeats."""
        return list(dict.fromkeys(r.service for r in self.routes))


def _inherit(item: Any, defaults: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    if not isinstance(item, dict):
        return item
    out = dict(item)
    for key in keys:
        if key not in defaults:
            continue
        base, own = defaults[key], item.get(key)
        if isinstance(base, dict) and isinstance(own, dict):
            out[key] = {**base, **own}
        elif own is None:
            out[key] = base
    return out


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file. Raises SpecError naming file, key and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found (use -c to choose one)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror}") from None
    return parse_spec(text, path)


def parse_spec(text: str, path: Path) -> Spec:
    try:
        document = load_yaml(text, str(path), SpecLoader)
    except YamlError as exc:
        raise SpecError(str(exc)) from None
    data, node = document.data, document.node
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping with registry, nginx, routes")
    lines = _key_lines(node)
    context = {"base_dir": str(path.resolve().parent)}
    # Validate defaults alone first, so a bad default is reported once, at its own line,
    # rather than once per route that inherited it.
    for model, key in ((Defaults, "defaults"),):
        if isinstance(data.get(key), dict):
            try:
                model.model_validate(data[key], context=context)
            except ValidationError as exc:
                raise SpecError(_format_errors(exc, path, lines, prefix=(key,))) from None
    try:
        spec = Spec.model_validate({**data, "source_path": str(path)}, context=context)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, path, lines)) from None
    return spec


def _key_lines(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map each key path in the YAML document to its 1-based line number."""
    lines: dict[tuple[Any, ...], int] = {}
    # Iterative: a document may nest as deep as the parser allows (1000 levels).
    todo: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())] if node is not None else []
    while todo:
        n, at = todo.pop()
        lines.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = at + (k.value,)
                lines[key] = k.start_mark.line + 1
                todo.append((v, key))
        elif isinstance(n, yaml.SequenceNode):
            todo.extend((v, at + (i,)) for i, v in enumerate(n.value))
    return lines


MAX_ERRORS = 20


def _format_errors(
    exc: ValidationError,
    path: Path,
    lines: dict[tuple[Any, ...], int],
    prefix: tuple[Any, ...] = (),
) -> str:
    out = []
    errors = exc.errors()
    for err in errors:
        # pydantic also calls a list "too short" when its only item was invalid: noise.
        if err["type"] == "too_short" and any(
            e is not err and tuple(e["loc"][: len(err["loc"])]) == tuple(err["loc"]) for e in errors
        ):
            continue
        loc = _without_union_tag(prefix + tuple(err["loc"]))
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        key = _dotted(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the spec reference in the README)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and err["type"] not in ("value_error",) and _short(err["input"]):
            msg += f" (got {err['input']!r})"
        out.append(f"{path}{f':{line}' if line else ''}: {_cut(key, 120)}: {_cut(msg, 240)}")
    unique = list(dict.fromkeys(out))
    if len(unique) > MAX_ERRORS:  # 2,000 bad routes: the first ones say what is wrong
        more = len(unique) - MAX_ERRORS
        unique[MAX_ERRORS:] = [f"{path}: ... and {more} more error{'s' if more > 1 else ''}"]
    return "\n".join(unique)


def _cut(text: str, limit: int) -> str:
    """Messages quote values from the spec: never a whole 100 KB one."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_union_tag(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic puts the registry kind into error locations; users never wrote it."""
    if len(loc) > 1 and loc[0] == "registry" and loc[1] in REGISTRY_KINDS:
        return loc[:1] + loc[2:]
    return loc


def _short(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and len(str(value)) < 60


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


__all__ = [
    "ApiKeys",
    "Auth",
    "Backoff",
    "CacheSpec",
    "ConsulRegistry",
    "DEFAULT_SPEC",
    "Debounce",
    "Defaults",
    "Duration",
    "EtcdRegistry",
    "EurekaRegistry",
    "Failover",
    "FileRegistry",
    "HASH_KEY",
    "Health",
    "KubernetesRegistry",
    "L1Cache",
    "Model",
    "NEXT_UPSTREAM",
    "NO_BACKUP_METHODS",
    "NacosRegistry",
    "NginxSpec",
    "OptionalLimitConn",
    "OptionalRateLimit",
    "Probe",
    "REGISTRY_KINDS",
    "ROUTE_KEYS",
    "RateLimit",
    "Recovery",
    "RedisSpec",
    "RegistrySpec",
    "RegistryTLS",
    "RemovalGuard",
    "Route",
    "SERVICE_KEYS",
    "ServicePolicy",
    "Spec",
    "SpecError",
    "SpecLoader",
    "SpecPath",
    "Timeouts",
    "Token",
    "Warmup",
    "WatchSpec",
    "balance_args",
    "load_spec",
    "parse_duration",
    "parse_spec",
]
