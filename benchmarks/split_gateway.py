"""The gateway the split benchmarks render (split.py, balancer_instructions.py): route
/plain/ to two backends and, with a split, route /split/ to service carts, whose blue
version is the first backend and green the second.

    from split_gateway import split_gateway_spec
    spec = split_gateway_spec(work, port, status, (port_a, port_b), rules=[...])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def split_gateway_spec(
    d: Path,
    port: int,
    status: int,
    backends: tuple[int, int],
    rules: list[dict[str, str]] | None,
    name: str = "nginx",
    endpoints: str | None = None,
) -> Path:
    """Write services.yaml and nginxgen.yaml into `d` and return nginxgen.yaml: one worker
    listening on `port`, the status server on `status`, output and pid `name`.conf and
    `name`.pid in `d`, nginx.endpoints `endpoints` (None: the default). `rules`: carts'
    split rules before its 50/50 sticky share on $cookie_session; None: no split at all
    (route /plain/ alone)."""
    peers = [f"127.0.0.1:{p}" for p in backends]
    services: dict[str, list[dict[str, Any]]] = {
        "plain": [{"id": f"p{i}", "address": a} for i, a in enumerate(peers)]
    }
    routes = [{"path": "/plain/", "service": "plain"}]
    nginx: dict[str, Any] = {
        "flavor": "nginx",
        "listen": f"127.0.0.1:{port}",
        "status_listen": f"127.0.0.1:{status}",
        "output": str(d / f"{name}.conf"),
        "pid": str(d / f"{name}.pid"),
        "worker_processes": 1,
    }
    if endpoints is not None:
        nginx["endpoints"] = endpoints
    spec: dict[str, Any] = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": nginx,
        "defaults": {"warmup": "off"},
        "routes": routes,
    }
    if rules is not None:
        services["carts"] = [
            {"id": "b", "address": peers[0], "meta": {"version": "blue"}},
            {"id": "g", "address": peers[1], "meta": {"version": "green"}},
        ]
        routes.append({"path": "/split/", "service": "carts"})
        split = {"weights": {"blue": 50, "green": 50}, "sticky": "$cookie_session", "rules": rules}
        spec["services"] = {"carts": {"split": split}}
    (d / "services.yaml").write_text(yaml.safe_dump({"services": services}))
    path = d / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
