"""What an aggregate route buys a client: one request through the gateway that fans out to
three services inside nginx, against the client calling the three services one after
another through the same gateway.

Two measurements, each with the two ways side by side:

1. Throughput and p99 under load (wrk, keep-alive): the aggregate route /bff/home, and the
   three plain routes called in turn on each connection (a wrk script cycles them, so one
   answer is three requests: answers/s = requests/s / 3). The backends are one nginx
   answering JSON itself, never the bottleneck. Rounds interleave; medians are printed.
2. Latency with slow services (each answer takes --delay, 200 ms by default): one client,
   one answer at a time; the aggregate waits for the slowest part, the client in turn for
   the sum. Medians of --samples answers.

    python benchmarks/aggregate.py [--rounds 5] [--seconds 5] [--connections 16]

Numbers depend on the machine; compare the columns, not machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processes import nginx_cmd, render, start, stop  # noqa: E402
from wrk import wrk  # noqa: E402

from tests.helpers import free_port  # noqa: E402

SERVICES = ("users", "carts", "recs")
BODIES = {
    "users": {"id": 7, "name": "Ada", "email": "ada@example.com"},
    "carts": {"items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}], "total": 31.5},
    "recs": {"id": 3, "title": "Gloves", "image": "/img/3.jpg", "score": 0.92},
}
SEQUENCE = """
local paths = { "/users/me", "/carts/s-1", "/recs/top" }
local i = 0
request = function()
    i = i % 3 + 1
    return wrk.format("GET", paths[i], { ["Cookie"] = "session=s-1" })
end
"""


def backend_conf(work: Path, ports: dict[str, int]) -> Path:
    servers = "\n".join(
        f"""    server {{
        listen 127.0.0.1:{ports[name]};
        default_type application/json;
        location / {{ return 200 '{json.dumps(BODIES[name])}'; }}
    }}"""
        for name in SERVICES
    )
    conf = work / "backend.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {work}/backend.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{servers}
}}
"""
    )
    return conf


def gateway_conf(work: Path, port: int, ports: dict[str, int], name: str) -> Path:
    services = {n: [{"id": f"{n}-1", "address": f"127.0.0.1:{ports[n]}"}] for n in SERVICES}
    (work / f"{name}-services.yaml").write_text(yaml.safe_dump({"services": services}))
    routes: list[dict[str, Any]] = [
        {
            "path": "/bff/home",
            "aggregate": {
                "timeout": "5s",
                "parts": {
                    "user": {"service": "users", "path": "/me", "required": True},
                    "cart": {"service": "carts", "path": "/carts/{cookie.session}"},
                    "recs": {"service": "recs", "path": "/top", "allow": ["id", "title"]},
                },
            },
        },
        *({"path": f"/{n}/", "service": n} for n in SERVICES),
    ]
    spec = {
        "registry": {"kind": "file", "path": f"{name}-services.yaml"},
        "nginx": {
            "flavor": "nginx",
            "listen": f"127.0.0.1:{port}",
            "pid": f"{name}.pid",
            "status_listen": f"127.0.0.1:{free_port()}",
            "worker_processes": 1,
        },
        "routes": routes,
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return render(path, work / f"{name}.conf")


def _slow_handler(payload: bytes, delay: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


class SlowServices:
    """Three JSON services that each answer after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.servers: dict[str, ThreadingHTTPServer] = {}

    def start(self) -> dict[str, int]:
        for name in SERVICES:
            handler = _slow_handler(json.dumps(BODIES[name]).encode(), self.delay)
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers[name] = server
        return {n: s.server_address[1] for n, s in self.servers.items()}

    def stop(self) -> None:
        for s in self.servers.values():
            s.shutdown()
            s.server_close()


def answer_ms(session: requests.Session, base: str, aggregate: bool) -> float:
    t0 = time.perf_counter()
    if aggregate:
        r = session.get(f"{base}/bff/home", timeout=30)
        assert r.status_code == 200 and r.headers["X-Nginxgen-Complete"] == "true", r.text
    else:
        for path in ("/users/me", "/carts/s-1", "/recs/top"):
            r = session.get(f"{base}{path}", timeout=30)
            assert r.status_code == 200, r.text
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    work.chmod(0o755)
    script = work / "sequence.lua"
    script.write_text(SEQUENCE)
    ports = {n: free_port() for n in SERVICES}
    fast, slow_port = free_port(), free_port()
    procs = [start(nginx_cmd(backend_conf(work, ports)), ports["recs"], work / "backend.log")]
    slow = SlowServices(args.delay)
    load: dict[str, list[tuple[float, float]]] = {"aggregate": [], "sequential": []}
    latency: dict[str, list[float]] = {"aggregate": [], "sequential": []}
    try:
        conf = gateway_conf(work, fast, ports, "fast")
        procs.append(start(nginx_cmd(conf), fast, work / "fast.log"))
        agg_url = f"http://127.0.0.1:{fast}/bff/home"
        seq_url = f"http://127.0.0.1:{fast}/"
        wrk(agg_url, 1, args.connections, header="Cookie: session=s-1")  # warm-up
        wrk(seq_url, 1, args.connections, script=str(script))
        for _ in range(args.rounds):
            run = wrk(agg_url, args.seconds, args.connections, header="Cookie: session=s-1")
            load["aggregate"].append((run.rps, run.p99_ms))
            run = wrk(seq_url, args.seconds, args.connections, script=str(script))
            load["sequential"].append((run.rps / 3, run.p99_ms))

        slow_ports = slow.start()
        conf = gateway_conf(work, slow_port, slow_ports, "slow")
        procs.append(start(nginx_cmd(conf), slow_port, work / "slow.log"))
        base = f"http://127.0.0.1:{slow_port}"
        with requests.Session() as session:
            session.cookies.set("session", "s-1")
            answer_ms(session, base, True), answer_ms(session, base, False)  # warm-up
            for _ in range(args.samples):
                latency["aggregate"].append(answer_ms(session, base, True))
                latency["sequential"].append(answer_ms(session, base, False))
    finally:
        slow.stop()
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"1. wrk -t1 -c{args.connections} -d{args.seconds}s keep-alive, {args.rounds} "
        "interleaved rounds, 1 gateway worker, backends answer from nginx"
    )
    print(f"{'client':<11} {'answers/s':>10} {'p99 ms':>8}  rounds (answers/s)")
    for name, runs in load.items():
        rps = statistics.median(r for r, _ in runs)
        p99 = statistics.median(p for _, p in runs)
        each = " ".join(f"{r:.0f}" for r, _ in runs)
        print(f"{name:<11} {rps:>10.0f} {p99:>8.2f}  {each}")
    print("   (sequential p99 is one of the three calls; an answer waits for all three)")
    ratio = statistics.median(r for r, _ in load["aggregate"]) / statistics.median(
        r for r, _ in load["sequential"]
    )
    print(f"   aggregate/sequential answers/s: {ratio:.2f}")
    print(
        f"2. three services that each take {args.delay * 1000:.0f} ms, one answer at a time, "
        f"median of {args.samples}"
    )
    for name, values in latency.items():
        print(f"{name:<11} {statistics.median(values):>8.0f} ms per answer")


if __name__ == "__main__":
    main()
