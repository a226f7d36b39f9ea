"""Hand-written nginx.conf pieces for the metrics tests: the lines the Python side will
render for nginxgen.metrics (docs/monitoring.md, "What the rendered nginx.conf contains"),
around routes shaped like the templates' (a label per location, refusals through named
locations, a cached route with its own log phase, a 503 route)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from nginxgen.render import lua_string
from tests.helpers import Nginx, free_port, nginx_workers, poll_until, wait_for_port
from tests.lua.harness import (
    feed_server,
    lua_pieces,
    nginx_conf,
    readable_copy,
    token_digest,
    upstream,
)

API_KEY = "metrics-test-key-7d1e"
METRICS_LOG = 'log_by_lua_block { require("nginxgen.metrics").log() }'
# Everything the log hook needs, in one variable (lua/nginxgen/metrics.lua: RECORD);
# behind the Lua balancer, which tells the hook the peer, BALANCED_RECORD.
RECORD = "$nginxgen_route|$upstream_response_time|$upstream_addr"
METRICS_MAP = f'map "" $nginxgen_metrics {{ default "{RECORD}"; }}'
BALANCED_RECORD = "$nginxgen_route|$upstream_response_time"
BALANCED_METRICS_MAP = f'map "" $nginxgen_metrics {{ default "{BALANCED_RECORD}"; }}'
# The map of the configs rendered before the constant key.
ROUTE_KEYED_MAP = f'map $nginxgen_route $nginxgen_metrics {{ default "{RECORD}"; }}'
# The map configs rendered before this one have: status and duration in the record too.
OLD_RECORD = "$status $request_time $nginxgen_route|$upstream_response_time|$upstream_addr"
OLD_METRICS_MAP = f'map $status $nginxgen_metrics {{ default "{OLD_RECORD}"; }}'


@dataclass(frozen=True)
class Route:
    label: str  # $nginxgen_route: the route's path, "=/path" for exact ones
    service: str
    cache: bool = False
    versions: bool = False

    def lua(self) -> str:
        flags = "".join(
            f", {k} = true" for k, on in (("cache", self.cache), ("versions", self.versions)) if on
        )
        return f"[{lua_string(self.label)}] = {{ service = {lua_string(self.service)}{flags} }}"


def metrics_init(routes: list[Route], **options: Any) -> str:
    """The init_by_lua line: route label → service (and whether to ask the cache or
    ngx.ctx.nginxgen_version); every other setting is optional."""
    settings = [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    table = ", ".join(r.lua() for r in routes)
    settings.append(f"routes = {{ {table} }}")
    return f'require("nginxgen.metrics").init({{ {", ".join(settings)} }})'


def metrics_status_location() -> str:
    return """
        location = /metrics {
            allow 127.0.0.0/8;
            allow ::1;
            deny all;
            content_by_lua_block { require("nginxgen.metrics").serve() }
        }"""


@dataclass
class Scrape:
    """One /metrics answer, parsed by prometheus_client."""

    text: str
    samples: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, text: str) -> Scrape:
        samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples]
        return cls(text, samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


class MetricsGateway:
    """nginx with metrics on every route kind the templates make, 2 workers by default.

    Routes: /api/ (proxy to `peers`, retries on error), =/exact, /limited/ (1r/m, burst
    1, 429 through @nginxgen_429), /keyed/ (API key, 401), /sso/ (auth_request to
    `auth`, 401/403), /gone/ (nobody alive: 503), /c/ (Redis cache, when `redis_port`),
    /v/ (a version per request, from the X-Version header: test-only, to drive the hook),
    and no route (404)."""

    def __init__(
        self,
        workdir: Path,
        peers: list[str],
        auth: str,
        redis_port: int | None = None,
        workers: int = 2,
        interval: float = 0.25,
        dict_size: str = "4m",
        options: dict[str, Any] | None = None,
        record: bool | str = True,  # a map line of its own: a config rendered before
    ) -> None:
        self.workdir = workdir
        self.port, self.status_port = free_port(), free_port()
        self.workers_n = workers
        self.lua = readable_copy(workdir)
        self.routes = [
            Route("/api/", "app"),
            Route("=/exact", "app"),
            Route("/limited/", "app"),
            Route("/keyed/", "app"),
            Route("/sso/", "app"),
            Route("/gone/", "nobody"),
            Route("/v/", "app", versions=True),
        ]
        if redis_port:
            self.routes.append(Route("/c/", "app", cache=True))
        self.interval = interval
        opts = {"interval": interval, **(options or {})}
        servers = "".join(f"        server {p} max_fails=0;\n" for p in peers)
        cache_http = cache_loc = ""
        if redis_port:
            cache_http = """
    lua_shared_dict nginxgen_cache 1m;"""
            cache_init = (
                'require("nginxgen.cache").init({ state_dict = "nginxgen_cache", '
                f'redis = {{ host = "127.0.0.1", port = {redis_port}, db = 0, '
                "connect_timeout = 1000, read_timeout = 1000, pool_size = 8, "
                'idle_timeout = 10000, key_prefix = "mt:", errors_to_skip = 3, cooldown = 5, '
                'pool = "nginxgen:mt" }, routes = { c = { ttl = 30000, statuses = { 200 }, '
                "max_body = 1048576, bypass_credentials = true, allow_no_cache = false, "
                "identity = {}, key_headers = {}, stampede_wait = 1, lock_ttl = 2, "
                "l1_ttl = 0 } } })"
            )
            cache_loc = """
        location /c/ {
            set $nginxgen_route "/c/";
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            access_by_lua_block { require("nginxgen.cache").access("c") }
            header_filter_by_lua_block { require("nginxgen.cache").header_filter() }
            body_filter_by_lua_block { require("nginxgen.cache").body_filter() }
            # A location's log handler replaces the server's: metrics are counted here too.
            log_by_lua_block { require("nginxgen.cache").log() require("nginxgen.metrics").log() }
        }"""
        else:
            cache_init = ""
        proxy = """
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502;"""
        http = f"""
    lua_package_path "{self.lua}/?.lua;;";
    lua_shared_dict nginxgen_metrics {dict_size};{cache_http}
    init_by_lua_block {{
        require("nginxgen.metrics")
        {metrics_init(self.routes, **opts)}
        {cache_init}
    }}
    init_worker_by_lua_block {{ require("nginxgen.metrics").init_worker() }}
    {METRICS_MAP if record is True else record or ""}
    limit_req_zone $binary_remote_addr zone=mt_limit:1m rate=1r/m;
    upstream app {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        set $nginxgen_route "";
        {METRICS_LOG}
        add_header X-Worker $pid always;

        location @nginxgen_429 {{ return 429 '{{"error":"too many requests"}}'; }}
        location @nginxgen_401 {{ return 401 '{{"error":"missing or invalid credentials"}}'; }}
        location @nginxgen_403 {{ return 403 '{{"error":"forbidden"}}'; }}
        location = /_nginxgen/auth/0 {{
            internal;
            # A subrequest shares its parent's variables and runs the server's `set`
            # again: the route's auth location sets the route's label back.
            set $nginxgen_route "/sso/";
            proxy_pass http://{auth};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
        location / {{ return 404 '{{"error":"no route"}}'; }}
        location /api/ {{
            set $nginxgen_route "/api/";{proxy}
        }}
        location = /exact {{
            set $nginxgen_route "=/exact";{proxy}
        }}
        location /limited/ {{
            set $nginxgen_route "/limited/";
            error_page 429 = @nginxgen_429;
            limit_req zone=mt_limit burst=1 nodelay;
            limit_req_status 429;{proxy}
        }}
        location /keyed/ {{
            set $nginxgen_route "/keyed/";
            error_page 401 = @nginxgen_401;
            if ($http_x_api_key != "{API_KEY}") {{
                return 401;
            }}{proxy}
        }}
        location /sso/ {{
            set $nginxgen_route "/sso/";
            auth_request /_nginxgen/auth/0;
            error_page 401 = @nginxgen_401;
            error_page 403 = @nginxgen_403;{proxy}
        }}
        location /gone/ {{
            set $nginxgen_route "/gone/";
            return 503 '{{"error":"no live instance"}}';
        }}
        location /v/ {{
            set $nginxgen_route "/v/";
            # test only: issue 15's split decision will set this in its access phase
            access_by_lua_block {{ ngx.ctx.nginxgen_version = ngx.var.http_x_version }}{proxy}
        }}{cache_loc}
    }}
    server {{
        listen 127.0.0.1:{self.status_port};
        access_log off;{metrics_status_location()}
    }}"""
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(nginx_conf(workdir, http, workers=workers, log_level="warn"))
        self.nginx: Nginx | None = None

    def start(self) -> MetricsGateway:
        self.nginx = Nginx(self.conf, self.workdir / "nginx.pid").start(self.port)
        wait_for_port(self.status_port)
        poll_until(lambda: len(self.workers()) >= self.workers_n, timeout=10, what="workers")
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()

    def workers(self) -> set[int]:
        assert self.nginx is not None and self.nginx.proc is not None
        return nginx_workers(self.nginx.proc.pid)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def scrape(self) -> Scrape:
        r = requests.get(f"http://127.0.0.1:{self.status_port}/metrics", timeout=10)
        r.raise_for_status()
        return Scrape.of(r.text)

    def scrape_until(self, done: Any, timeout: float = 15.0) -> Scrape:
        """Scrape until done(scrape) is true (counts arrive after one flush and one
        render, ~2 intervals; a loaded machine takes longer); the last scrape otherwise."""
        last: list[Scrape] = []

        def check() -> Scrape | None:
            s = self.scrape()
            last[:] = [s]
            return s if done(s) else None

        try:
            return poll_until(check, timeout=timeout, what="metrics")
        except (AssertionError, TimeoutError):
            return last[0] if last else self.scrape()

    def error_log(self) -> str:
        log = self.workdir / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""


def dynamic_http(
    lua_dir: Path, plan: dict[str, Any], token: str, routes: list[Route], port: int
) -> str:
    """The endpoint feed and metrics together: one init_by_lua, one init_worker_by_lua
    calling both modules, the balancer's log hook handing the metrics one its peer."""
    ups = "".join(upstream(name) for name in plan["upstreams"])
    locs = "".join(
        f"""
        location /{r.service}/ {{
            set $nginxgen_route {lua_string(r.label)};
            proxy_pass http://{r.service};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502;
        }}"""
        for r in routes
    )
    feed = (
        f"plan = {lua_pieces(json.dumps(plan))}, token_sha256 = {lua_string(token_digest(token))}"
    )
    log = 'require("nginxgen.metrics").log(require("nginxgen.balancer").log())'
    return f"""
    lua_package_path "{lua_dir}/?.lua;;";
    lua_shared_dict nginxgen_endpoints 4m;
    lua_shared_dict nginxgen_health 1m;
    lua_shared_dict nginxgen_metrics 4m;
    {BALANCED_METRICS_MAP}
    init_by_lua_block {{
        require("nginxgen.balancer")
        require("nginxgen.endpoints").init({{ {feed} }})
        {metrics_init(routes, interval=0.25)}
    }}
    init_worker_by_lua_block {{
        require("nginxgen.endpoints").init_worker()
        require("nginxgen.metrics").init_worker()
    }}{ups}
    server {{
        listen 127.0.0.1:{port};
        set $nginxgen_route "";
        log_by_lua_block {{ {log} }}{locs}
    }}"""


def dynamic_status_server(status_port: int) -> str:
    """feed_server's locations plus /metrics on the same loopback listener."""
    text = feed_server(status_port)
    head, _, tail = text.rpartition("}")
    return head + metrics_status_location() + "\n    }" + tail


def send(url: str, n: int, session: bool = True, **kwargs: Any) -> list[int]:
    """n GETs (over one kept-alive connection, or a new connection each); their statuses."""
    out = []
    if session:
        with requests.Session() as s:
            for _ in range(n):
                out.append(s.get(url, timeout=10, **kwargs).status_code)
    else:
        for _ in range(n):
            out.append(requests.get(url, timeout=10, **kwargs).status_code)
    return out
