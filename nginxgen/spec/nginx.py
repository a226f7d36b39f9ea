"""`nginx:` — the flavour, paths and listeners of the rendered config."""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import BeforeValidator

from .cache import parse_size
from .fields import LoopbackListen, Model, SpecPath, Token


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

    @model_validator(mode="before")
    @classmethod
    def _metrics_follow_status_listen(cls, data: Any) -> Any:
        if isinstance(data, dict) and "metrics" not in data and data.get("status_listen") == "off":
            return {**data, "metrics": False}
        return data

    @model_validator(mode="after")
    def _status_port_apart(self) -> NginxSpec:
        if self.status_listen == "off":
            if self.metrics:
                raise ValueError("metrics are served on status_listen, which is off")
            return self
        if self.status_listen.rsplit(":", 1)[1] == self.listen.rsplit(":", 1)[-1]:
            raise ValueError("status_listen must use another port than listen")
        return self
