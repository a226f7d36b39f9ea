"""Traffic policies: failover, timeouts, passive health, warm-up, probes, balance."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator

from .fields import Duration, Model, SpecPath
from .gateway import OptionalLimitConn, OptionalRateLimit
from .snippets import UpstreamSnippet
from .split import Split

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
    """What to do when an instance has been pseudo-dead for `after` probes: run a command,
    POST JSON to a URL (a control center), or ask the instance's own agent to restart it
    (`agent: true`: POST <meta.nginxgen_control>/restart with the token in `token_file`)."""

    after: int = Field(10, ge=1)  # consecutive failed probes
    command: tuple[str, ...] | None = None  # argv, no shell; JSON on stdin
    url: str | None = None  # POST application/json
    agent: bool = False  # POST the instance's advertised control endpoint
    token_file: SpecPath | None = None  # agent: the bearer token, one line, mode 0600
    cooldown: Duration = 600.0  # at most once per instance per cooldown
    timeout: Duration = 10.0

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_action(self) -> Recovery:
        given = (self.command is not None) + (self.url is not None) + self.agent
        if given != 1:
            raise ValueError("give exactly one of 'command' (argv list), 'url' or 'agent: true'")
        if self.command is not None and not self.command:
            raise ValueError("command must not be empty")
        if self.url is not None and not re.match(r"^https?://[^\s]+$", self.url):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if self.agent and not self.token_file:
            raise ValueError(
                "agent: true needs token_file (the file with the agents' bearer token)"
            )
        if self.token_file and not self.agent:
            raise ValueError("token_file is for agent: true")
        return self


class Probe(Model):
    """Active health checks run by nginxgen (not nginx) against each instance."""

    enabled: bool = True
    kind: Literal["http", "https", "tcp"] = "http"  # tcp: a connect within the timeout
    path: str = "/healthz"
    verify: bool = True  # https: verify the instance's certificate
    ca: SpecPath | None = None  # https: trust only this CA (PEM)
    sni: str | None = None  # https: the TLS name to send and verify; default the address
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

    @model_validator(mode="after")
    def _tls(self) -> Probe:
        if self.kind != "https" and (
            self.ca is not None or self.sni is not None or not self.verify
        ):
            raise ValueError(f"ca, sni and verify are for kind: https, not {self.kind}")
        if self.ca is not None and not self.verify:
            raise ValueError("ca and verify: false contradict each other")
        if self.sni is not None and not re.fullmatch(
            r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
            r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
            self.sni,
        ):
            raise ValueError(f"sni must be a DNS name, got {self.sni!r}")
        return self

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
    snippets: UpstreamSnippet | None = None  # inside the service's (HTTP) upstream {}
    split: Split | None = None  # versions, weights, rules, mirror, guard (spec/split.py)
