"""nginxgen.yaml → Spec, validated, with errors that name the file, key and line.

Two override levels mirror nginx's own: location-level settings (failover, timeouts)
live on `routes` and fall back to `defaults`; upstream-level settings (health, keepalive)
live in `services: {NAME: ...}` and fall back to `defaults`. Fallback is per key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
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


# --- gateway policies (rate limits, auth, monitoring; docs/gateway.md) -------------------

_RATE = re.compile(r"^([1-9]\d{0,6})r/(s|m)$")
# HTTP header names nginx exposes as $http_*: letters, digits and '-' (nginx ignores
# headers with '_' by default, so a spec naming one would silently never match).
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_AUTH_URL = re.compile(
    r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:/[A-Za-z0-9._~!&()*+,=:@%/-]*)?$"
)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_LOOPBACK = re.compile(r"^(?:127(?:\.\d{1,3}){3}|localhost|\[::1\]):(\d{1,5})$")


def _header_name(value: str) -> str:
    if not _HEADER.match(value):
        raise ValueError(f"not an HTTP header name (letters, digits and '-'): {value!r}")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


def _loopback_listen(value: Any) -> Any:
    if value == "off":
        return value
    m = _LOOPBACK.match(str(value))
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise ValueError(
            f"must be a loopback address:port (127.0.0.1:9145, [::1]:9145), got {value!r}; "
            "the status server exposes internals and must not face the network"
        )
    return str(value)


LoopbackListen = Annotated[str, BeforeValidator(_loopback_listen)]


class RateLimit(Model):
    rate: str  # 100r/s or 600r/m
    burst: int = Field(0, ge=0)
    # true: a burst is served at once and the excess refused; false: the burst is queued
    # and released at `rate` (nginx's default), which adds latency instead of 429s.
    nodelay: bool = True
    key: str = "client_ip"  # client_ip | api_key | header:<Name>
    zone_size: Token = "10m"  # shared memory per zone; 1m holds ~16k client addresses

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        if not _RATE.match(str(v)):
            raise ValueError(f"rate must look like 100r/s or 600r/m, got {v!r}")
        return v

    @field_validator("zone_size")
    @classmethod
    def _zone_size(cls, v: str) -> str:
        if not re.fullmatch(r"[1-9]\d{0,5}[km]", v):
            raise ValueError(f"zone_size must look like 512k or 10m, got {v!r}")
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if v in ("client_ip", "api_key"):
            return v
        if v.startswith("header:") and _HEADER.match(v[len("header:") :]):
            return v
        raise ValueError(f"key must be client_ip, api_key or header:<Header-Name>, got {v!r}")

    @property
    def per_second(self) -> float:
        m = _RATE.match(self.rate)
        assert m is not None
        return int(m.group(1)) / (1.0 if m.group(2) == "s" else 60.0)


def _off_is_none(value: Any) -> Any:
    """`rate_limit: off` on a route opts it out of a limit set in `defaults`."""
    return None if value == "off" or value is False else value


OptionalRateLimit = Annotated[RateLimit | None, BeforeValidator(_off_is_none)]


def _positive(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


OptionalLimitConn = Annotated[int | None, BeforeValidator(_off_is_none), AfterValidator(_positive)]


class ApiKeys(Model):
    header: HeaderName = "X-Api-Key"
    file: SpecPath  # one key per line; `sha256:<hex>` lines hold a key's digest instead
    _digests: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _read_keys(self) -> ApiKeys:
        self._digests = read_key_digests(self.file)
        return self

    @property
    def digests(self) -> tuple[str, ...]:
        """sha256 hex digests of the accepted keys; the keys themselves are not kept."""
        return self._digests


def read_key_digests(path: str) -> tuple[str, ...]:
    """Keys file → sha256 digests. Errors name the line, never the key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the API keys file {path} is not UTF-8 text") from None
    digests: dict[str, None] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("sha256:"):
            digest = line[len("sha256:") :].lower()
            if not _SHA256_HEX.match(digest):
                raise ValueError(f"{path}:{n}: sha256: must be followed by 64 hex digits")
        elif any(c.isspace() or not c.isprintable() or not c.isascii() for c in line):
            raise ValueError(f"{path}:{n}: a key must be printable ASCII without spaces")
        else:
            digest = hashlib.sha256(line.encode()).hexdigest()
        digests[digest] = None
    if not digests:
        raise ValueError(f"the API keys file {path} holds no keys")
    return tuple(digests)


class Auth(Model):
    api_keys: ApiKeys | None = None
    url: str | None = None  # auth_request: 2xx allows, 401/403 go back to the client
    forward_headers: tuple[HeaderName, ...] = ()  # from the auth response to the upstream

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not _AUTH_URL.match(v):
            raise ValueError(f"url must be http(s)://host[:port][/path], got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Auth:
        if (self.api_keys is None) == (self.url is None):
            raise ValueError("set exactly one of api_keys or url")
        if self.forward_headers and self.url is None:
            raise ValueError("forward_headers needs url (headers come from the auth response)")
        return self


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
    # Warm-up and probe state that must survive a restart; default: next to `output`.
    state_file: SpecPath | None = None
    client_max_body_size: Token = "1m"
    access_log_format: Literal["combined", "json"] = "combined"
    # Loopback-only status server: the config generation (`watch` polls it after a reload
    # to confirm the new config serves), stub_status, and /metrics when `metrics` is on.
    # "off": no status server, and `watch` cannot confirm reloads.
    status_listen: LoopbackListen = "127.0.0.1:9181"  # or "off"
    # Lua request counters per route, served as Prometheus text on the status server.
    metrics: bool = False
    # How `watch` reloads: SIGHUP to the master in `pid`, or `<binary> -s reload`.
    reload: Literal["signal", "binary"] = "signal"
    reload_command: tuple[str, ...] | None = None  # overrides `reload`, e.g. [supervisorctl, ...]

    @field_validator("reload_command", mode="before")
    @classmethod
    def _reload_command(cls, v: Any) -> Any:
        import shlex

        return shlex.split(v) if isinstance(v, str) else v

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

    @model_validator(mode="after")
    def _status_port_apart(self) -> NginxSpec:
        if self.status_listen == "off":
            if self.metrics:
                raise ValueError("metrics are served on status_listen, which is off")
            return self
        if self.status_listen.rsplit(":", 1)[1] == self.listen.rsplit(":", 1)[-1]:
            raise ValueError("status_listen must use another port than listen")
        return self


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


def _off(value: Any) -> Any:
    """`warmup: off` / `probe: off` (or false) switch a policy off."""
    if value in ("off", False):
        return {"enabled": False}
    return value


class Warmup(Model):
    """Graceful start: a new instance's weight climbs by `step_percent` every `period`."""

    enabled: bool = True
    step_percent: int = Field(10, ge=1, le=100)
    period: Duration = 30.0

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return _off(v)

    @field_validator("period")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("period must be longer than 0s")
        return v


_URL_PATH = re.compile(r"^/[A-Za-z0-9._~!&()*+,=:@%/?-]*$")


class Recovery(Model):
    """Run a command or POST JSON when an instance has been pseudo-dead for `after` probes."""

    after: int = Field(10, ge=1)  # consecutive failed probes
    command: tuple[str, ...] | None = None  # argv, no shell; JSON on stdin
    url: str | None = None  # POST application/json
    cooldown: Duration = 600.0  # at most once per instance per cooldown
    timeout: Duration = 10.0

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_action(self) -> Recovery:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (argv list) or 'url'")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty")
        if self.url is not None and not re.match(r"^https?://[^\s]+$", self.url):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self


class Probe(Model):
    """Active health checks run by nginxgen (not nginx) against each instance."""

    enabled: bool = True
    path: str = "/healthz"
    interval: Duration = 5.0
    timeout: Duration = 2.0
    rise: int = Field(2, ge=1)  # consecutive successes to come back
    fall: int = Field(3, ge=1)  # consecutive failures to be kept out
    expect_status: tuple[int, ...] = (200,)
    recovery: Recovery | None = None

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        return _off(v)

    @field_validator("expect_status", mode="before")
    @classmethod
    def _statuses(cls, v: Any) -> Any:
        v = [v] if isinstance(v, int) else v
        if isinstance(v, (list, tuple)) and not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in v
        ):
            raise ValueError(f"expect_status must list HTTP status codes 100-599, got {v!r}")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not _URL_PATH.match(v):
            raise ValueError(f"must be a URL path starting with '/': {v!r}")
        return v

    @field_validator("interval", "timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be longer than 0s")
        return v


# Variables a `hash` key may use: request and client properties, never a free expression.
_HASH_VAR = (
    r"\$(?:request_uri|uri|args|host|remote_addr|binary_remote_addr|scheme|request_method"
    r"|http_[a-z0-9_]+|cookie_[A-Za-z0-9_]+|arg_[A-Za-z0-9_]+)"
)
HASH_KEY = re.compile(rf"^(?:{_HASH_VAR})+$")
BALANCE_METHODS = ("round_robin", "least_conn", "ip_hash", "random", "hash")
# nginx refuses `backup` servers with these methods.
NO_BACKUP_METHODS = ("ip_hash", "hash", "random")


def balance_args(balance: str) -> tuple[str, ...]:
    """The upstream directive for a validated `balance` value; () for round robin."""
    words = tuple(balance.split())
    return () if words == ("round_robin",) else words


def _balance(value: str) -> str:
    words = value.split()
    if not words or words[0] not in BALANCE_METHODS:
        raise ValueError(
            f"unknown balance {value!r}; use round_robin, least_conn, ip_hash, random "
            "or 'hash <key> [consistent]'"
        )
    if words[0] == "hash":
        if len(words) not in (2, 3) or (len(words) == 3 and words[2] != "consistent"):
            raise ValueError(f"use 'hash <key>' or 'hash <key> consistent', got {value!r}")
        if not HASH_KEY.match(words[1]):
            raise ValueError(
                f"hash key {words[1]!r} must be made of $request_uri, $uri, $args, $host, "
                "$remote_addr, $binary_remote_addr, $scheme, $request_method, $http_<name>, "
                "$cookie_<name> or $arg_<name>"
            )
    elif len(words) != 1:
        raise ValueError(f"{words[0]} takes no arguments, got {value!r}")
    return " ".join(words)


Balance = Annotated[str, AfterValidator(_balance)]


# Keys that fall back from `defaults` to routes (location level) or services (upstream level).
ROUTE_KEYS = ("failover", "timeouts", "rate_limit", "limit_conn")
SERVICE_KEYS = ("health", "keepalive", "warmup", "probe", "balance")


class Defaults(Model):
    failover: Failover = Failover()
    timeouts: Timeouts = Timeouts()
    health: Health = Health()
    keepalive: int = Field(32, ge=0)  # idle keepalive connections per worker; 0 = off
    rate_limit: OptionalRateLimit = None
    limit_conn: OptionalLimitConn = None
    warmup: Warmup = Warmup()
    probe: Probe = Probe(enabled=False)
    balance: Balance = "round_robin"


class ServicePolicy(Model):
    health: Health = Health()
    keepalive: int = Field(32, ge=0)
    warmup: Warmup = Warmup()
    probe: Probe = Probe(enabled=False)
    balance: Balance = "round_robin"


# --- cache (Redis, answered inside nginx by lua/nginxgen/cache.lua) --------------------

_SIZE = re.compile(r"^(\d+)([kKmMgG]?)$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def parse_size(value: Any) -> int:
    """'512k', '1m' or a number of bytes → bytes."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value.strip())):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    else:
        raise ValueError(f"not a size (use e.g. 512k, 1m): {value!r}")
    if size < 0:
        raise ValueError(f"size must not be negative: {value!r}")
    return size


Size = Annotated[int, BeforeValidator(parse_size)]


class RedisSpec(Model):
    """Where the cache lives. The password never enters nginx.conf: only the name of the
    environment variable that holds it, read by Lua when a connection is opened."""

    host: Token = "127.0.0.1"
    port: int = Field(6379, ge=1, le=65535)
    socket: SpecPath | None = None  # a unix socket path; replaces host/port when set
    db: int = Field(0, ge=0, le=1_000_000)
    password_env: str | None = None
    connect_timeout: Duration = 0.1
    read_timeout: Duration = 0.2
    pool_size: int = Field(32, ge=1, le=100_000)  # idle connections kept per worker
    idle_timeout: Duration = 60.0
    key_prefix: str = "nginxgen:cache:"
    # Fail open: after this many errors in a row Redis is skipped for `cooldown`.
    errors_to_skip: int = Field(3, ge=1)
    cooldown: Duration = 5.0

    @field_validator("connect_timeout", "read_timeout")
    @classmethod
    def _short_timeout(cls, v: float) -> float:
        # A bare number is seconds, as everywhere in the spec; 100 here is a typo for 100ms.
        if not 0.001 <= v <= 10:
            raise ValueError(f"must be between 1ms and 10s (write e.g. 100ms), got {v:g}s")
        return v

    @field_validator("password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(
                f"must be the NAME of an environment variable (not the password): {v!r}"
            )
        return v

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:/-]{0,64}", v):
            raise ValueError(f"use up to 64 letters, digits and _ . : / - : {v!r}")
        return v

    @field_validator("socket")
    @classmethod
    def _socket(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"/[A-Za-z0-9_./-]+", v):
            raise ValueError(f"must be an absolute path of plain characters: {v!r}")
        return v


class L1Cache(Model):
    """A per-route shared dict in front of Redis for the hottest keys."""

    ttl: Duration = 1.0
    size: Token = "10m"

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: float) -> float:
        if v < 0.001:
            raise ValueError("must be at least 1ms")
        return v

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        if not re.fullmatch(r"\d+[kKmM]?", v) or parse_size(v) < 12 * 1024:
            raise ValueError(f"must be a size of at least 12k (e.g. 10m): {v!r}")
        return v


class CacheSpec(Model):
    ttl: Duration
    statuses: tuple[int, ...] = (200,)
    headers: tuple[str, ...] = ()  # response headers stored besides Content-Type
    max_body: Size = 1024 * 1024
    bypass_credentials: bool = True  # requests with Authorization or Cookie skip the cache
    allow_no_cache: bool = True  # a request's Cache-Control/Pragma no-cache skips it
    host: Token | None = None  # the host in the key; default: nginx.server_name
    use_request_host: bool = False  # key on the client's Host instead (virtual hosting)
    stampede_wait: Duration = 2.0  # how long concurrent misses wait for one fill
    l1: L1Cache | None = None

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: float) -> float:
        if v < 0.001:
            raise ValueError("must be at least 1ms")
        return v

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        bad = [s for s in v if not 200 <= s <= 599]
        if bad or not v:
            raise ValueError(f"list HTTP statuses between 200 and 599, got {list(v)}")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [h for h in v if not _HEADER_NAME.match(h)]
        if bad:
            raise ValueError(f"not header names: {bad}")
        never = [h for h in v if h.lower() in ("set-cookie", "content-length", "x-cache")]
        if never:
            raise ValueError(f"these headers are never stored: {never}")
        return v

    @model_validator(mode="after")
    def _check(self) -> CacheSpec:
        if self.l1 is not None and self.l1.ttl > self.ttl:
            raise ValueError(f"l1.ttl {self.l1.ttl:g}s is longer than the cache ttl {self.ttl:g}s")
        return self


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


# --- watch ------------------------------------------------------------------------------


class Debounce(Model):
    """Apply once the registry has been quiet for `min`, but never later than `max`."""

    min: Duration = 0.2
    max: Duration = 2.0

    @model_validator(mode="after")
    def _order(self) -> Debounce:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}s) must not be shorter than min ({self.min}s)")
        return self


class Backoff(Model):
    """Retry delay after registry errors: doubles from `initial` up to `max`, with jitter."""

    initial: Duration = 0.5
    max: Duration = 30.0


class RemovalGuard(Model):
    """Hold reads that suddenly empty a service or remove more than `max_removed_share`
    of it, until `confirm_reads` consecutive reads over `confirm_period` agree."""

    max_removed_share: float = Field(0.5, ge=0.0, le=1.0)
    confirm_reads: int = Field(3, ge=1)
    confirm_period: Duration = 10.0


def _host_port_or_off(v: str) -> str:
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})", v)
    if v != "off" and (not m or not 1 <= int(m.group(2)) <= 65535):
        raise ValueError(f"must be host:port such as 127.0.0.1:9180, or off: {v!r}")
    return v


class WatchSpec(Model):
    debounce: Debounce = Debounce()
    backoff: Backoff = Backoff()
    guard: RemovalGuard = RemovalGuard()
    # /healthz and /metrics. Loopback by default; 0.0.0.0:9180 lets Prometheus scrape a pod.
    listen: Annotated[str, AfterValidator(_host_port_or_off)] = "127.0.0.1:9180"
    confirm_timeout: Duration = 10.0  # how long a reload may take to serve the new config
    # Read the registry in full at least this often even without a change signal, so a
    # registry that broke silently (deleted file, lost watch) shows up as stale.
    resync: Duration = 30.0


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
