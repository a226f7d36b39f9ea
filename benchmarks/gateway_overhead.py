"""What the gateway policies cost per request: wrk against routes with and without them.

Starts a backend nginx (answers 200 itself, so it is never the bottleneck), renders a
gateway with nginxgen in front of it, once without and once with the metrics server, and
runs wrk against a plain route, a rate-limited route (limit far above the load), an API
key route and an auth_request route. Prints requests/s and latency per case.

    python benchmarks/gateway_overhead.py [--seconds 5] [--connections 32]

Numbers depend on the machine; compare the rows with each other, not across machines.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from wrk import nginx_binary, wrk  # noqa: E402

from tests.helpers import free_port, wait_for_port  # noqa: E402

KEY = "bench-key-5f0c2a9e7d"


def start_nginx(conf: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(conf.parent / f"{conf.stem}.stderr", "ab")  # noqa: SIM115 - lives with nginx
    proc = subprocess.Popen(
        [nginx_binary(), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        stdout=log,
        stderr=log,
    )
    wait_for_port(port)
    return proc


def backend_conf(work: Path, port: int, auth_port: int) -> Path:
    conf = work / "backend.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {work}/backend.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 'ok'; }}
    }}
    server {{
        listen 127.0.0.1:{auth_port};
        location / {{ add_header X-User-Id u-1; return 200; }}
    }}
}}
"""
    )
    return conf


def gateway_conf(work: Path, port: int, backend: int, auth: int, metrics: bool) -> Path:
    (work / "keys.txt").write_text(KEY + "\n")
    (work / "services.yaml").write_text(
        yaml.safe_dump({"services": {"app": [{"id": "a", "address": f"127.0.0.1:{backend}"}]}})
    )
    nginx: dict[str, object] = {
        "flavor": "nginx",
        "listen": f"127.0.0.1:{port}",
        "pid": "gateway.pid",
        "worker_processes": 1,
    }
    if metrics:
        nginx["status_listen"] = f"127.0.0.1:{free_port()}"
    spec = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": nginx,
        "routes": [
            {"path": "/plain/", "service": "app"},
            {
                "path": "/limited/",
                "service": "app",
                "rate_limit": {"rate": "1000000r/s", "burst": 100000},
            },
            {"path": "/keyed/", "service": "app", "auth": {"api_keys": {"file": "keys.txt"}}},
            {
                "path": "/sso/",
                "service": "app",
                "auth": {"url": f"http://127.0.0.1:{auth}/", "forward_headers": ["X-User-Id"]},
            },
        ],
    }
    path = work / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec))
    conf = work / "gateway.conf"
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(path), "-o", str(conf)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return conf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    work.chmod(0o755)
    backend_port, auth_port = free_port(), free_port()
    procs = [start_nginx(backend_conf(work, backend_port, auth_port), backend_port)]
    rows = []
    try:
        for metrics in (False, True):
            port = free_port()
            gw = start_nginx(gateway_conf(work, port, backend_port, auth_port, metrics), port)
            procs.append(gw)
            for route, header in (
                ("/plain/", None),
                ("/limited/", None),
                ("/keyed/", f"X-Api-Key: {KEY}"),
                ("/sso/", None),
            ):
                url = f"http://127.0.0.1:{port}{route}"
                run = wrk(url, args.seconds, args.connections, threads=2, header=header)
                rows.append((route, "on" if metrics else "off", run.rps, run.avg, run.p99))
            gw.send_signal(signal.SIGQUIT)
            gw.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT)
                p.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(f"wrk -t2 -c{args.connections} -d{args.seconds}s, 1 gateway worker, loopback backend")
    print(f"{'route':<10} {'metrics':<8} {'req/s':>10} {'avg':>9} {'p99':>9}")
    for route, metrics_on, rps, avg, p99 in rows:
        print(f"{route:<10} {metrics_on:<8} {rps:>10.0f} {avg:>9} {p99:>9}")


if __name__ == "__main__":
    main()
