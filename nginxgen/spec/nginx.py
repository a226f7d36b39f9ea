"""`nginx:` — the flavour, paths and listeners of the rendered config."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import AfterValidator, BeforeValidator

from .cache import parse_size
from .fields import LoopbackListen, Model, SpecPath, Token
from .listen import Listener, check_listeners, listeners_input, network, resolver_address


class NginxSpec(Model):
    flavor: Literal["auto", "openresty", "nginx"] = "auto"
    binary: str | None = None  # path to nginx/openresty; default: found on PATH by flavor
    output: SpecPath = "build/nginx.conf"
    # `listen:` in the spec: a port, host:port, a listener mapping, or a list of them.
    listeners: Annotated[tuple[Listener, ...], BeforeValidator(listeners_input)] = Field(
        "8080",  # type: ignore[arg-type]
        validation_alias="listen",
    )
    server_name: Token = "_"  # of the default host (top-level routes)
    # Load balancers whose PROXY header (proxy_protocol listeners) tells the client address.
    real_ip_from: tuple[Annotated[str, AfterValidator(network)], ...] = ()
    # DNS servers nginx asks itself (OCSP responders for ocsp_stapling).
    resolver: tuple[Annotated[str, AfterValidator(resolver_address)], ...] = ()
    pid: SpecPath = "build/nginx.pid"
    temp_dir: SpecPath | None = None  # default: <output dir>/tmp
    error_log: SpecPath = "stderr"
    access_log: SpecPath | Literal["off"] = "off"
    user: Token | None = None
    worker_processes: int | Literal["auto"] = "auto"
    worker_connections: int = Field(1024, ge=16, le=1_000_000)
    modules_path: str | None = None  # stock nginx: where ndk/lua .so live (default: nginx -V)
    # Shared memory per upstream: the minimum; an upstream with more servers gets more
    # (plan.zone_size). "off": no zones (per-worker peer state, as before nginx 1.9).
    upstream_zone: str = "64k"
    # Warm-up and probe state that must survive a restart; default: next to `output`.
    state_file: SpecPath | None = None
    client_max_body_size: Token = "1m"
    access_log_format: Literal["combined", "json"] = "combined"
    # Loopback-only status server: the config generation (`watch` polls it after a reload
    # to confirm the new config serves), stub_status, and /metrics when `metrics` is on.
    # "off": no status server, and `watch` cannot confirm reloads.
    status_listen: LoopbackListen = "127.0.0.1:9181"  # or "off"
    # Lua request counters per route, served as Prometheus text on the status server
    # (docs/monitoring.md). Default: on, unless status_listen is off (nowhere to serve them).
    metrics: bool = True
    # How `watch` reloads: SIGHUP to the master in `pid`, or `<binary> -s reload`.
    reload: Literal["signal", "binary"] = "signal"
    reload_command: tuple[str, ...] | None = None  # overrides `reload`, e.g. [supervisorctl, ...]
    # How endpoint changes reach nginx (docs/dynamic-endpoints.md): "dynamic" balances every
    # HTTP upstream in Lua over endpoints `watch` pushes, without a reload; "reload" writes
    # the servers into nginx.conf and reloads for every change. Default: dynamic when the
    # config runs Lua already (metrics on) and has the status listener the feed lives on.
    endpoints: Literal["dynamic", "reload"] = "dynamic"
    # The feed's bearer token: a file nginxgen creates (mode 0600) when missing; only its
    # sha256 goes into nginx.conf. Default: nginxgen-endpoints.token next to `output`.
    endpoints_token: SpecPath | None = None
    # The last confirmed endpoints, which nginx loads at start (written by `watch`).
    # Default: nginxgen-endpoints.json next to `output`.
    endpoints_snapshot: SpecPath | None = None
    # lua_shared_dict of the feed: 2 x services x (100 + 60 x peers) bytes + 1m holds a full
    # push; keep it stable (a HUP that resizes it starts empty and the snapshot decides).
    endpoints_dict_size: str = "32m"

    @field_validator("reload_command", mode="before")
    @classmethod
    def _reload_command(cls, v: Any) -> Any:

        return shlex.split(v) if isinstance(v, str) else v

    @field_validator("upstream_zone")
    @classmethod
    def _upstream_zone(cls, v: str) -> str:
        if v == "off":
            return v
        if not re.fullmatch(r"[0-9]{1,9}[kKmM]?", v):
            raise ValueError(f"must be a size like 64k or 1m, or off; got {v!r}")
        if parse_size(v) < 32 * 1024:
            raise ValueError(f"must be at least 32k (nginx's smallest zone); got {v!r}")
        return v

    @field_validator("listeners")
    @classmethod
    def _listeners(cls, v: tuple[Listener, ...]) -> tuple[Listener, ...]:
        check_listeners(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _metrics_follow_status_listen(cls, data: Any) -> Any:
        if isinstance(data, dict) and "metrics" not in data and data.get("status_listen") == "off":
            return {**data, "metrics": False}
        return data

    @model_validator(mode="before")
    @classmethod
    def _endpoints_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "endpoints" not in data:
            lua = data.get("status_listen") != "off" and data.get("metrics", True) is not False
            return {**data, "endpoints": "dynamic" if lua else "reload"}
        return data

    @field_validator("endpoints_dict_size")
    @classmethod
    def _dict_size(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9]{1,9}[kKmM]?", v) or parse_size(v) < 1024 * 1024:
            raise ValueError(f"must be a size of at least 1m, like 32m; got {v!r}")
        return v

    @model_validator(mode="after")
    def _feed_needs_status_listen(self) -> NginxSpec:
        if self.endpoints == "dynamic" and self.status_listen == "off":
            raise ValueError(
                "endpoints: dynamic pushes endpoints to the loopback status listener, which "
                "is off; set status_listen or endpoints: reload"
            )
        return self

    @property
    def dynamic(self) -> bool:
        return self.endpoints == "dynamic"

    @property
    def token_path(self) -> str:
        return self.endpoints_token or str(Path(self.output).parent / "nginxgen-endpoints.token")

    @property
    def snapshot_path(self) -> str:
        return self.endpoints_snapshot or str(Path(self.output).parent / "nginxgen-endpoints.json")

    @model_validator(mode="after")
    def _status_port_apart(self) -> NginxSpec:
        if self.status_listen == "off":
            if self.metrics:
                raise ValueError("metrics are served on status_listen, which is off")
            return self
        status_port = int(self.status_listen.rsplit(":", 1)[1])
        if any(lst.port == status_port for lst in self.listeners):
            raise ValueError("status_listen must use another port than listen")
        return self

    @model_validator(mode="after")
    def _client_address_known(self) -> NginxSpec:
        if any(lst.proxy_protocol for lst in self.listeners) and not self.real_ip_from:
            raise ValueError(
                "proxy_protocol listeners need real_ip_from: the load balancers' addresses, "
                "so that the client address comes from their PROXY header and nobody "
                "else's (without it every client looks like the load balancer)"
            )
        return self

    @property
    def listen(self) -> str:
        """The first listener as `listen` has always read (`8080`, `127.0.0.1:8080`): what
        the single-server render writes."""
        return self.listeners[0].address

    @property
    def tls_listeners(self) -> tuple[Listener, ...]:
        return tuple(lst for lst in self.listeners if lst.tls)
