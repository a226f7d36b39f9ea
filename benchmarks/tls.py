"""What TLS costs at the gateway: requests/s through one nginxgen-rendered gateway, over
plain HTTP and over HTTPS (TLS 1.3, Mozilla intermediate, an EC P-256 certificate), with
wrk keeping its connections alive, so the handshake is paid once per connection and the
number is the cost of encrypting the traffic.

One gateway serves both: the same host and route on a plain and a TLS listener, in front
of a backend nginx that answers 200 itself (never the bottleneck). Plain and TLS runs
interleave, round after round; the medians are printed side by side.

    python benchmarks/tls.py [--rounds 5] [--seconds 5] [--connections 32]

Numbers depend on the machine; compare the two columns, not machines.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processes import nginx_cmd, render, start, stop  # noqa: E402
from wrk import wrk  # noqa: E402

from tests.helpers import free_port  # noqa: E402
from tests.helpers.certs import make_ca, make_cert, write_pair  # noqa: E402

NAME = "localhost"  # wrk sends the URL's host as SNI; it must resolve to loopback


def backend_conf(work: Path, port: int) -> Path:
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
}}
"""
    )
    return conf


def loopback_hosts() -> list[str]:
    """The addresses `localhost` resolves to here: the gateway listens on each."""
    found = {a[4][0] for a in socket.getaddrinfo(NAME, None, type=socket.SOCK_STREAM)}
    return sorted(found & {"127.0.0.1", "::1"})


def gateway_conf(work: Path, plain: int, tls: int, backend: int) -> Path:
    now = datetime.now(timezone.utc)
    ca = make_ca(now=now)
    write_pair(work, "gw", [make_cert([NAME], issuer=ca, now=now)])
    (work / "services.yaml").write_text(
        yaml.safe_dump({"services": {"app": [{"id": "a", "address": f"127.0.0.1:{backend}"}]}})
    )
    listen = []
    for host in loopback_hosts():
        listen += [{"host": host, "port": plain}, {"host": host, "port": tls, "tls": True}]
    spec = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": {"flavor": "nginx", "listen": listen, "pid": "gateway.pid", "worker_processes": 1},
        "hosts": [
            {
                "server_names": [NAME],
                "tls": {"cert": "gw.pem", "key": "gw.key"},
                "routes": [{"path": "/", "service": "app"}],
            }
        ],
    }
    path = work / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec))
    return render(path, work / "gateway.conf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    work.chmod(0o755)
    backend, plain, tls = free_port(), free_port(), free_port()
    procs = [start(nginx_cmd(backend_conf(work, backend)), backend, work / "backend.log")]
    results: dict[str, list[tuple[float, float]]] = {"http": [], "https": []}
    try:
        procs.append(
            start(nginx_cmd(gateway_conf(work, plain, tls, backend)), tls, work / "gateway.log")
        )
        urls = {"http": f"http://{NAME}:{plain}/", "https": f"https://{NAME}:{tls}/"}
        for url in urls.values():  # warm both up: worker caches, TLS session setup
            wrk(url, 1, args.connections)
        for _ in range(args.rounds):
            for scheme, url in urls.items():
                run = wrk(url, args.seconds, args.connections, socket_errors=False)
                results[scheme].append((run.rps, run.p99_ms))
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s keepalive, {args.rounds} interleaved "
        "rounds, 1 gateway worker, loopback backend"
    )
    print(f"{'scheme':<7} {'median req/s':>13} {'median p99 ms':>14}  rounds (req/s)")
    for scheme, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        p99 = statistics.median(p for _, p in runs)
        each = " ".join(f"{r:.0f}" for r, _ in runs)
        print(f"{scheme:<7} {rps:>13.0f} {p99:>14.2f}  {each}")
    ratio = statistics.median(r for r, _ in results["https"]) / statistics.median(
        r for r, _ in results["http"]
    )
    print(f"https/http: {ratio:.2f}")


if __name__ == "__main__":
    main()
