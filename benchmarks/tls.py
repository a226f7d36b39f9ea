"""What TLS costs at the gateway: requests/s through one nginxgen-rendered gateway, over
plain HTTP and over HTTPS (TLS 1.3, Mozilla intermediate, an EC P-256 certificate):

- keepalive: wrk keeps its connections alive, so the handshake is paid once per
  connection and the number is the cost of encrypting the traffic;
- new connections: wrk sends `Connection: close`, so every request opens a connection,
  and over HTTPS pays a full TLS handshake (no session resumption: wrk does not offer it);
- WebSocket: the round trip of one small message through the gateway's `websocket: true`
  route (plain and TLS) next to the same message sent to the echo backend directly.

One gateway serves both: the same host and routes on a plain and a TLS listener, in front
of a backend nginx that answers 200 itself (never the bottleneck) and an in-process
WebSocket echo. Plain and TLS runs interleave, round after round; the medians are printed
side by side.

    python benchmarks/tls.py [--rounds 5] [--seconds 5] [--connections 32] [--messages 2000]

Numbers depend on the machine; compare the two columns, not machines.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processes import nginx_cmd, render, start, stop  # noqa: E402
from wrk import wrk  # noqa: E402

from tests.helpers import free_port  # noqa: E402
from tests.helpers.certs import make_ca, make_cert, write_pair  # noqa: E402
from tests.helpers.websocket import WebSocketEcho, ws_connect  # noqa: E402

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


def gateway_conf(work: Path, plain: int, tls: int, backend: int, ws: str) -> Path:
    now = datetime.now(timezone.utc)
    ca = make_ca(now=now)
    (work / "ca.pem").write_bytes(ca.pem())
    write_pair(work, "gw", [make_cert([NAME], issuer=ca, now=now)])
    services = {
        "app": [{"id": "a", "address": f"127.0.0.1:{backend}"}],
        "chat": [{"id": "c", "address": ws}],
    }
    (work / "services.yaml").write_text(yaml.safe_dump({"services": services}))
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
                "routes": [
                    {"path": "/", "service": "app"},
                    {"path": "/ws/", "service": "chat", "websocket": True},
                ],
            }
        ],
    }
    path = work / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec))
    return render(path, work / "gateway.conf")


def ws_round_trips(port: int, messages: int, ctx: ssl.SSLContext | None) -> list[float]:
    """Seconds per echo of a 32-byte message, one at a time on one connection."""
    out = []
    with ws_connect(port, "/ws/", host=f"{NAME}:{port}", ssl_context=ctx) as ws:
        payload = "x" * 32
        for _ in range(messages):
            t0 = time.perf_counter()
            ws.send(payload)
            ws.recv(timeout=10)
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    work.chmod(0o755)
    backend, plain, tls = free_port(), free_port(), free_port()
    procs = [start(nginx_cmd(backend_conf(work, backend)), backend, work / "backend.log")]
    echo = WebSocketEcho("chat").start()
    results: dict[str, list[tuple[float, float]]] = {"http": [], "https": []}
    fresh: dict[str, list[tuple[float, float]]] = {"http": [], "https": []}
    trips: dict[str, list[float]] = {"direct": [], "ws": [], "wss": []}
    try:
        conf = gateway_conf(work, plain, tls, backend, echo.address)
        procs.append(start(nginx_cmd(conf), tls, work / "gateway.log"))
        ctx = ssl.create_default_context(cafile=str(work / "ca.pem"))
        urls = {"http": f"http://{NAME}:{plain}/", "https": f"https://{NAME}:{tls}/"}
        for url in urls.values():  # warm both up: worker caches, TLS session setup
            wrk(url, 1, args.connections)
        close = "Connection: close"
        for _ in range(args.rounds):
            for scheme, url in urls.items():
                run = wrk(url, args.seconds, args.connections, socket_errors=False)
                results[scheme].append((run.rps, run.p99_ms))
                run = wrk(url, args.seconds, args.connections, header=close)
                fresh[scheme].append((run.rps, run.p99_ms))
            trips["direct"] += ws_round_trips(echo.port, args.messages, None)
            trips["ws"] += ws_round_trips(plain, args.messages, None)
            trips["wss"] += ws_round_trips(tls, args.messages, ctx)
    finally:
        echo.stop()
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s keepalive, {args.rounds} interleaved "
        "rounds, 1 gateway worker, loopback backend"
    )
    table(results)
    print()
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, 'Connection: close': a new connection")
    print("(and over https a full TLS 1.3 handshake) per request")
    table(fresh)
    print()
    print(f"WebSocket echo, 32-byte text messages one at a time, {args.messages} per round")
    print(f"{'path':<7} {'median us':>10} {'p99 us':>9}")
    for path, samples in trips.items():
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(f"{path:<7} {statistics.median(ordered) * 1e6:>10.0f} {p99 * 1e6:>9.0f}")


def table(results: dict[str, list[tuple[float, float]]]) -> None:
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
