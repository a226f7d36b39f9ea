"""The Redis cache and the metrics counters together on one route."""

from __future__ import annotations

import subprocess
import sys

import requests

from tests.helpers import free_port, write_spec
from tests.integration.test_gateway import metric, poll


def test_cached_route_is_counted_and_its_hits_never_reach_the_backend(
    workdir, backends, nginx_runner, redis_server
):
    redis = redis_server()
    app = backends("app")
    port, status = free_port(), free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{port}",
                "status_listen": f"127.0.0.1:{status}",
                "metrics": True,
                "pid": "nginx.pid",
            },
            "redis": {"host": "127.0.0.1", "port": redis.port},
            "routes": [{"path": "/c/", "service": "app", "cache": {"ttl": "30s"}}],
        },
        {"app": [{"id": "a", "address": app.address}]},
    )
    conf = workdir / "nginx.conf"
    cmd = [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(conf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    nginx_runner(conf, workdir / "nginx.pid", port)

    caches = [requests.get(f"http://127.0.0.1:{port}/c/x", timeout=10) for _ in range(5)]
    assert [r.headers.get("X-Cache") for r in caches] == ["MISS"] + ["HIT"] * 4
    assert app.count == 1

    def scrape() -> str | None:
        text = requests.get(f"http://127.0.0.1:{status}/metrics", timeout=10).text
        done = metric(text, "nginxgen_requests_total", route="/c/", status="2xx") == 5
        return text if done else None

    text = poll(scrape)
    assert text, "metrics never counted the cached route's 5 requests"
    assert metric(text, "nginxgen_cache_total", route="/c/", result="hit") == 4
    assert metric(text, "nginxgen_cache_total", route="/c/", result="miss") == 1
