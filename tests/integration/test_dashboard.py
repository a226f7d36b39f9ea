"""examples/monitoring's Grafana dashboard queries only metrics that exist: every
`nginxgen_*` name in it is in a real /metrics answer, of a rendered gateway in real nginx
or of the sidecar."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from nginxgen.watch.telemetry import Metrics
from tests.helpers import Nginx, free_port, poll_until, write_spec

REPO = Path(__file__).resolve().parent.parent.parent
DASHBOARD = REPO / "examples" / "monitoring" / "nginxgen-dashboard.json"
NAME = re.compile(r"\bnginxgen_[a-z0-9_]+")


def queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets, variables, annotations."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and "nginxgen_" in value:
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def names_in(text: str) -> set[str]:
    """Every series name a /metrics text declares or holds: a family with no series yet
    still counts (its HELP and TYPE lines say it exists)."""
    out = set()
    for family in text_string_to_metric_families(text):
        out |= {s.name for s in family.samples}
        if family.type == "counter":
            out.add(family.name + "_total")
        elif family.type == "histogram":
            out |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            out.add(family.name)
    return out


def test_the_dashboard_is_grafana_json_with_panels_and_queries() -> None:
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "job", "route"}


def test_every_metric_the_dashboard_queries_exists(
    workdir: Path, nginx_runner: Callable[..., Nginx], backends: Callable[..., Any]
) -> None:
    app = backends("app")
    port, status = free_port(), free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{port}",
                "status_listen": f"127.0.0.1:{status}",
                "pid": "nginx.pid",
                "metrics": True,
            },
            "routes": [{"path": "/api/", "service": "app"}],
        },
        {"app": [{"id": "a", "address": app.address}]},
    )
    conf = workdir / "nginx.conf"
    cmd = [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(conf)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    nginx_runner(conf, workdir / "nginx.pid", port)
    assert requests.get(f"http://127.0.0.1:{port}/api/x", timeout=10).status_code == 200

    def scraped() -> str | None:
        text = requests.get(f"http://127.0.0.1:{status}/metrics", timeout=10).text
        return text if "nginxgen_upstream_requests_total{" in text else None

    gateway = names_in(poll_until(scraped, timeout=15, what="the request in /metrics"))
    sidecar = names_in(Metrics().exposition().decode())
    wanted = {n for q in queries(json.loads(DASHBOARD.read_text())) for n in NAME.findall(q)}
    assert wanted, "the dashboard queries no nginxgen metric"
    assert wanted - gateway - sidecar == set()
