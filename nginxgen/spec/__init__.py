"""nginxgen.yaml → Spec, validated, with errors that name the file, key and line.

Override levels mirror nginx's own: location-level settings (failover, timeouts) live on
`routes` and fall back to their host's (`hosts:`), then to `defaults`; upstream-level
settings (health, keepalive) live in `services: {NAME: ...}` and fall back to `defaults`.
Fallback is per key. The HTTP surface (listeners, hosts, streams, snippets) is described
in docs/http-surface.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..util.yaml_load import SafeLoader, YamlError, load_yaml
from .cache import CacheSpec, L1Cache, RedisSpec
from .fields import (
    DEFAULT_SPEC,
    Duration,
    Model,
    SpecError,
    SpecPath,
    Token,
    dotted_key,
    keyed,
    parse_duration,
)
from .gateway import ApiKeys, Auth, OptionalLimitConn, OptionalRateLimit, RateLimit
from .hosts import HOST_ROUTE_KEYS, Host, HostPolicies, HostTLS, Hsts, VirtualHost
from .http import Cors, HeaderChanges, Headers, Rewrite, UpstreamTLS
from .listen import Listener
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
from .routes import LONG_READ, MATCHES, Route, check_unique_paths, long_read_default
from .snippets import Snippet, SnippetError, Snippets, parse_snippet
from .streams import Stream, StreamFailover, StreamTimeouts
from .surface import check_templates_dir, surface_problem
from .unrendered import unrendered_keys
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


class Spec(Model):
    registry: RegistrySpec
    # dict defaults are validated like user input, so default paths resolve against the spec.
    nginx: NginxSpec = Field(default_factory=dict)  # type: ignore[assignment]
    defaults: Defaults = Defaults()
    services: dict[str, ServicePolicy] = {}
    # The default host. Given, it must list a route; left out, `hosts` or `streams` serve.
    routes: tuple[Route, ...] = Field((), min_length=1, validate_default=False)
    hosts: tuple[Host, ...] = ()
    streams: tuple[Stream, ...] = ()
    snippets: Snippets = Snippets()
    templates_dir: SpecPath | None = None  # partial templates that replace nginxgen's by name
    redis: RedisSpec | None = None
    watch: WatchSpec = WatchSpec()
    source_path: str = ""  # set by load_spec; where this spec came from
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _inherit_defaults(cls, data: Any) -> Any:
        """Fill each route from its host and `defaults`, and each service from `defaults`,
        key by key (the route's own value first, then the host's, then `defaults`)."""
        if not isinstance(data, dict):
            return data
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            return data
        routes = data.get("routes")
        if isinstance(routes, list):
            data = {
                **data,
                "routes": [_inherit(long_read_default(r), defaults, ROUTE_KEYS) for r in routes],
            }
        hosts = data.get("hosts")
        if isinstance(hosts, list):
            data = {**data, "hosts": [_host_inherit(h, defaults) for h in hosts]}
        services = data.get("services")
        if isinstance(services, dict):
            data = {
                **data,
                "services": {k: _inherit(v, defaults, SERVICE_KEYS) for k, v in services.items()},
            }
        return data

    @model_validator(mode="after")
    def _something_to_serve(self) -> Spec:
        if not (self.routes or self.hosts or self.streams):
            raise ValueError("nothing to serve: give routes (the default host), hosts, or streams")
        return self

    @field_validator("routes")
    @classmethod
    def _unique_paths(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        return check_unique_paths(routes)

    @field_validator("templates_dir")
    @classmethod
    def _templates_dir(cls, v: str | None) -> str | None:
        return None if v is None else check_templates_dir(v)

    @model_validator(mode="after")
    def _cache_needs_redis(self) -> Spec:
        cached = [r.path for _, r in self.all_routes() if r.cache is not None]
        if cached and self.redis is None:
            raise ValueError(
                f"route {cached[0]!r} has a cache but the spec has no top-level "
                "`redis:` section (e.g. redis: {host: 127.0.0.1, port: 6379})"
            )
        return self

    @model_validator(mode="after")
    def _surface_agrees(self) -> Spec:
        """Listeners, hosts, routes and streams that cannot all be true at once."""
        problem = surface_problem(self)
        if problem:
            raise keyed(*problem)
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
        """Services the spec reads from the registry, in spec order, without repeats:
        those of the routes (top-level first, then each host's), then the streams'."""
        return list(dict.fromkeys(self.http_service_names + self.stream_service_names))

    @property
    def http_service_names(self) -> list[str]:
        return list(dict.fromkeys(s for _, r in self.all_routes() for s in r.services))

    @property
    def stream_service_names(self) -> list[str]:
        return list(dict.fromkeys(s.service for s in self.streams))

    @property
    def virtual_hosts(self) -> tuple[VirtualHost, ...]:
        """Every host, the default one (top-level routes) first when there is one."""
        out = []
        if self.routes:
            out.append(
                VirtualHost(
                    server_names=(self.nginx.server_name,),
                    routes=self.routes,
                    tls=None,
                    snippets=None,
                    default=True,
                    key=(),
                )
            )
        for i, h in enumerate(self.hosts):
            out.append(
                VirtualHost(h.server_names, h.routes, h.tls, h.snippets, False, ("hosts", i))
            )
        return tuple(out)

    def all_routes(self) -> list[tuple[VirtualHost, Route]]:
        return [(vh, r) for vh in self.virtual_hosts for r in vh.routes]

    @property
    def flat_routes(self) -> tuple[Route, ...]:
        """Every host's routes, the default host's (top-level) first: the index the
        planner gives each route's guard and cache."""
        return tuple(r for _, r in self.all_routes())

    def line(self, key: tuple[Any, ...]) -> int | None:
        """The spec line of `key` (or of the nearest key around it); None when unknown."""
        for i in range(len(key), 0, -1):
            if key[:i] in self._lines:
                return self._lines[key[:i]]
        return None

    def where(self, key: tuple[Any, ...]) -> str:
        """`nginxgen.yaml:12: hosts[0].tls.cert` for messages about that key after loading."""
        line = self.line(key)
        at = f"{self.source_path}:{line}" if line else self.source_path or "spec"
        return f"{at}: {dotted_key(key) or '(top level)'}"


def _host_inherit(host: Any, defaults: Mapping[str, Any]) -> Any:
    """A host's policies over `defaults`, then into each of its routes."""
    if not isinstance(host, dict) or not isinstance(host.get("routes"), list):
        return host
    own = {k: host[k] for k in HOST_ROUTE_KEYS if k in host}
    merged = _inherit(own, defaults, ROUTE_KEYS)
    routes = [_inherit(long_read_default(r, host), merged, HOST_ROUTE_KEYS) for r in host["routes"]]
    return {**host, "routes": routes}


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


def load_spec(path: str | Path, *, accept_unrendered: bool = False) -> Spec:
    """Read and validate a spec file. Raises SpecError naming file, key and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: spec file not found (use -c to choose one)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror}") from None
    return parse_spec(text, path, accept_unrendered=accept_unrendered)


def parse_spec(text: str, path: Path, *, accept_unrendered: bool = False) -> Spec:
    """Validate spec text. `accept_unrendered`: also accept keys this version validates
    but does not render yet (spec/unrendered.py); only tests of those keys want that."""
    try:
        document = load_yaml(text, str(path), SpecLoader)
    except YamlError as exc:
        raise SpecError(str(exc)) from None
    data, node = document.data, document.node
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping with registry, nginx, routes")
    lines = _key_lines(node)
    context = {"base_dir": str(path.resolve().parent)}
    # Validate defaults (and each host's policies) alone first, so a bad default is
    # reported once, at its own line, rather than once per route that inherited it.
    alone: list[tuple[type[Model], Any, tuple[Any, ...]]] = [
        (Defaults, data.get("defaults"), ("defaults",))
    ]
    hosts = data.get("hosts")
    if isinstance(hosts, list):
        for i, host in enumerate(hosts):
            if isinstance(host, dict):
                policies = {k: host[k] for k in HOST_ROUTE_KEYS if k in host}
                alone.append((HostPolicies, policies, ("hosts", i)))
    for model, value, prefix in alone:
        if isinstance(value, dict):
            try:
                model.model_validate(value, context=context)
            except ValidationError as exc:
                raise SpecError(_format_errors(exc, path, lines, prefix=prefix)) from None
    try:
        spec = Spec.model_validate({**data, "source_path": str(path)}, context=context)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, path, lines)) from None
    spec._lines = lines
    if not accept_unrendered:
        pending = unrendered_keys(spec)
        if pending:
            out = [
                f"{spec.where(key)}: valid, but this version of nginxgen does not render "
                f"{what} yet; refused rather than ignored"
                for key, what in sorted(pending, key=lambda p: spec.line(p[0]) or 0)
            ]
            raise SpecError("\n".join(_capped(out, path)))
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
        if err["type"] == "spec_key":  # a model's check about one of its keys
            loc += tuple(err["ctx"]["key"])
        if err["type"] == "union_tag_invalid":  # the line of the `kind:` itself
            loc += (err["ctx"]["discriminator"].strip("'"),)
        line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
        key = dotted_key(loc) or "(top level)"
        msg = _plain(err, loc) or err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see docs/spec.md)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "union_tag_invalid":
            kinds = ", ".join(t.strip(" '") for t in err["ctx"]["expected_tags"].split(","))
            what = " ".join(str(p) for p in loc[:-1] if isinstance(p, str)) or "the"
            msg = f"unknown {what} kind {err['ctx']['tag']!r} (one of {kinds})"
        elif (
            "input" in err
            and err["type"] not in ("value_error", "spec_key")
            and _short(err["input"])
        ):
            msg += f" (got {err['input']!r})"
        out.append(f"{path}{f':{line}' if line else ''}: {_cut(key, 120)}: {_cut(msg, 240)}")
    return "\n".join(_capped(list(dict.fromkeys(out)), path))


# pydantic's wording for a wrong type, in the words of a YAML file. A tuple or set is
# written as a list; a model as a mapping.
_TYPES = {
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "set_type": "must be a list",
    "frozen_set_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def _plain(err: Any, loc: tuple[Any, ...]) -> str | None:
    """pydantic's message for `err` in plain words, or None to keep its own."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _TYPES:
        return _TYPES[kind]
    if kind in ("too_short", "too_long"):
        bound = ctx["min_length"] if kind == "too_short" else ctx["max_length"]
        item = _item_word(loc)
        if kind == "too_short" and bound == 1:
            return f"must list at least one {item}"
        most = "at least" if kind == "too_short" else "at most"
        return f"must list {most} {bound} {item}s (got {ctx.get('actual_length', '?')})"
    if kind == "string_too_short":
        if ctx["min_length"] == 1:
            return "must not be empty"
        return f"must be at least {ctx['min_length']} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx['max_length']} characters long"
    if err["msg"].startswith("Input should be "):  # greater_than, literal_error, enum, ...
        return "must be " + err["msg"].removeprefix("Input should be ")
    return None


def _item_word(loc: tuple[Any, ...]) -> str:
    """What a list under `loc` holds: `routes` lists routes, `server_names` server names."""
    key = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if len(key) > 1 and key.endswith("s") and not key.endswith("ss"):
        return key[:-1].replace("_", " ")
    return "item"


def _capped(unique: list[str], path: Path) -> list[str]:
    if len(unique) > MAX_ERRORS:  # 2,000 bad routes: the first ones say what is wrong
        more = len(unique) - MAX_ERRORS
        unique[MAX_ERRORS:] = [f"{path}: ... and {more} more error{'s' if more > 1 else ''}"]
    return unique


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


__all__ = [
    "ApiKeys",
    "Auth",
    "Backoff",
    "balance_args",
    "CacheSpec",
    "check_templates_dir",
    "check_unique_paths",
    "ConsulRegistry",
    "Cors",
    "Debounce",
    "DEFAULT_SPEC",
    "Defaults",
    "Duration",
    "EtcdRegistry",
    "EurekaRegistry",
    "Failover",
    "FileRegistry",
    "HASH_KEY",
    "HeaderChanges",
    "Headers",
    "Health",
    "Host",
    "HOST_ROUTE_KEYS",
    "HostPolicies",
    "HostTLS",
    "Hsts",
    "keyed",
    "KubernetesRegistry",
    "L1Cache",
    "Listener",
    "load_spec",
    "LONG_READ",
    "MATCHES",
    "Model",
    "NacosRegistry",
    "NEXT_UPSTREAM",
    "NginxSpec",
    "NO_BACKUP_METHODS",
    "OptionalLimitConn",
    "OptionalRateLimit",
    "parse_duration",
    "parse_snippet",
    "parse_spec",
    "Probe",
    "RateLimit",
    "Recovery",
    "RedisSpec",
    "REGISTRY_KINDS",
    "RegistrySpec",
    "RegistryTLS",
    "RemovalGuard",
    "Rewrite",
    "Route",
    "ROUTE_KEYS",
    "SERVICE_KEYS",
    "ServicePolicy",
    "Snippet",
    "SnippetError",
    "Snippets",
    "Spec",
    "SpecError",
    "SpecLoader",
    "SpecPath",
    "Stream",
    "StreamFailover",
    "StreamTimeouts",
    "Timeouts",
    "Token",
    "unrendered_keys",
    "UpstreamTLS",
    "VirtualHost",
    "Warmup",
    "WatchSpec",
]
