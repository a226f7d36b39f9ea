"""nginxgen.yaml → Spec, validated, with errors that name the file, key and line.

Two override levels mirror nginx's own: location-level settings (failover, timeouts)
live on `routes` and fall back to `defaults`; upstream-level settings (health, keepalive)
live in `services: {NAME: ...}` and fall back to `defaults`. Fallback is per key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator

DEFAULT_SPEC = "nginxgen.yaml"

# nginx's proxy_next_upstream conditions (ngx_http_proxy_module).
NEXT_UPSTREAM = (
    "error",
    "timeout",
    "invalid_header",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_403",
    "http_404",
    "http_429",
    "non_idempotent",
    "off",
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class SpecLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `on:` (failover) as True."""


def _no_duplicate_keys(loader: Any, node: Any, deep: bool = False) -> Any:
    """PyYAML keeps the last of two equal keys silently; a spec must not."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)
SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class SpecError(Exception):
    """A spec that cannot be used; str() is the full, user-facing explanation."""


def parse_duration(value: Any) -> float:
    """'250ms', '5s', '1m', '2h' or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"not a duration (use e.g. 500ms, 5s, 1m): {value!r}")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    return seconds


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Relative paths in the spec are relative to the spec file, not the cwd."""
    base = (info.context or {}).get("base_dir")
    if value in ("-", "stderr", "off") or base is None or value.startswith("/dev/"):
        return value
    return str((Path(base) / value).resolve())


Duration = Annotated[float, BeforeValidator(parse_duration)]
SpecPath = Annotated[str, AfterValidator(_resolve_path)]
# Values placed in nginx.conf verbatim must be plain tokens.
_TOKEN = re.compile(r"^[A-Za-z0-9_.:/\[\]-]+$")


def _token(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"must be a plain token (letters, digits, _ . : / - [ ]): {value!r}")
    return value


Token = Annotated[str, AfterValidator(_token)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --- registries -------------------------------------------------------------------------


class FileRegistry(Model):
    kind: Literal["file"]
    path: SpecPath
    poll: Duration = 1.0


# --- network registries (minimal: what `nginxgen agent` needs to write) --------------------
# The registry readers define richer models of the same kinds with these same field names;
# when both exist, theirs win.


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"must be an http:// or https:// URL without query, got {value!r}")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _NetworkRegistry(Model):
    # Short by default: a registry that does not answer quickly is treated as down.
    connect_timeout: Duration = 2.0
    read_timeout: Duration = 5.0


class EtcdRegistry(_NetworkRegistry):
    kind: Literal["etcd"]
    url: HttpUrl | None = None
    endpoints: tuple[HttpUrl, ...] = ()
    prefix: str = "/services/"
    username: str | None = None
    password: SecretStr | None = None  # prefer password_env: secrets stay out of the spec
    password_env: str | None = None

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


class ConsulRegistry(_NetworkRegistry):
    kind: Literal["consul"]
    url: HttpUrl = "http://127.0.0.1:8500"
    token: SecretStr | None = None
    token_env: str = "CONSUL_HTTP_TOKEN"
    datacenter: Token | None = None


RegistrySpec = Annotated[FileRegistry | EtcdRegistry | ConsulRegistry, Field(discriminator="kind")]
REGISTRY_KINDS = ("file", "consul", "etcd", "nacos", "eureka")


# --- nginx ----------------------------------------------------------------------------


class NginxSpec(Model):
    flavor: Literal["auto", "openresty", "nginx"] = "auto"
    binary: str | None = None  # path to nginx/openresty; default: found on PATH by flavor
    output: SpecPath = "build/nginx.conf"
    listen: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)] = "8080"
    server_name: Token = "_"
    pid: SpecPath = "build/nginx.pid"
    temp_dir: SpecPath | None = None  # default: <output dir>/tmp
    error_log: SpecPath = "stderr"
    access_log: SpecPath | Literal["off"] = "off"
    user: Token | None = None
    worker_processes: int | Literal["auto"] = "auto"
    worker_connections: int = Field(1024, ge=16, le=1_000_000)
    modules_path: str | None = None  # stock nginx: where ndk/lua .so live (default: nginx -V)
    upstream_zone: Token | Literal["off"] = "64k"
    client_max_body_size: Token = "1m"

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if re.fullmatch(r"\d{1,5}", v):
            port = int(v)
        else:
            m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", v)
            if not m:
                raise ValueError(f"must be a port or host:port, got {v!r}")
            port = int(m.group(2))
        if not 1 <= port <= 65535:
            raise ValueError(f"port out of range 1-65535: {port}")
        return v


# --- policies -------------------------------------------------------------------------


class Failover(Model):
    on: tuple[str, ...] = ("error", "timeout", "http_502", "http_503", "http_504")
    tries: int = Field(2, ge=1)
    timeout: Duration = 0.0  # 0: no limit on the time spent on retries
    max_tries: int = Field(5, ge=1)  # cap that stops retry avalanches

    @field_validator("on", mode="before")
    @classmethod
    def _on(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> Failover:
        bad = [c for c in self.on if c not in NEXT_UPSTREAM]
        if bad:
            raise ValueError(
                f"unknown proxy_next_upstream value(s) {', '.join(map(repr, bad))}; "
                f"allowed: {' '.join(NEXT_UPSTREAM)}"
            )
        if "off" in self.on and len(self.on) > 1:
            raise ValueError("'off' cannot be combined with other failover conditions")
        if not self.on:
            raise ValueError("list at least one condition, or 'off'")
        if self.tries > self.max_tries:
            raise ValueError(f"tries {self.tries} exceeds max_tries {self.max_tries}")
        return self


class Timeouts(Model):
    connect: Duration = 5.0
    read: Duration = 60.0
    send: Duration = 60.0


class Health(Model):
    max_fails: int = Field(3, ge=0)  # 0 turns passive checks off
    fail_timeout: Duration = 10.0


# Keys that fall back from `defaults` to routes (location level) or services (upstream level).
ROUTE_KEYS = ("failover", "timeouts")
SERVICE_KEYS = ("health", "keepalive")


class Defaults(Model):
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()
    health: Health = Health()
    keepalive: int = Field(32, ge=0)  # idle keepalive connections per worker; 0 = off


class ServicePolicy(Model):
    health: Health = Health()
    keepalive: int = Field(32, ge=0)


class Route(Model):
    path: str
    service: str
    exact: bool = False  # `location = path` instead of a prefix match
    strip_prefix: bool = False  # send the path without the route prefix upstream
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()
    client_max_body_size: Token | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~!&'()*+,=:@%/-]*", v) or "'" in v:
            raise ValueError(f"must start with '/' and hold only URL path characters: {v!r}")
        return v

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        from .catalog import is_safe_name

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

    def service_policy(self, name: str) -> ServicePolicy:
        if name in self.services:
            return self.services[name]
        d = self.defaults
        return ServicePolicy(health=d.health, keepalive=d.keepalive)

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


# --- loading --------------------------------------------------------------------------


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
        node = yaml.compose(text, Loader=SpecLoader)
        data = yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}{where}: not valid YAML: {problem}") from None
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

    def walk(n: yaml.Node, at: tuple[Any, ...]) -> None:
        lines.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = at + (k.value,)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, at + (i,))

    if node is not None:
        walk(node, ())
    return lines


def _format_errors(
    exc: ValidationError,
    path: Path,
    lines: dict[tuple[Any, ...], int],
    prefix: tuple[Any, ...] = (),
) -> str:
    out = []
    for err in exc.errors():
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
        out.append(f"{path}{f':{line}' if line else ''}: {key}: {msg}")
    return "\n".join(dict.fromkeys(out))


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
