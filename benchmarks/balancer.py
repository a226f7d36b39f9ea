"""The Lua balancer against a stock upstream, and how fast a push reaches every worker.

One gateway nginx holds two upstreams over the same two backend peers, both with the
same `keepalive`: `stock` (server lines, nginx's round robin) and `dyn` (placeholder
server + balancer_by_lua fed by the endpoint feed, plus the log hook). wrk runs against
each in interleaved rounds; the medians of req/s and p99 are compared in the same run.
Then a series of pushes, each timed from the POST until every worker reports it.

    python benchmarks/balancer.py [--rounds 5] [--seconds 5] [--connections 32]

Goals (issue 14): dyn ≥ 90 % of stock's throughput, p99 within 0.2 ms of it; a push
served by every worker within 100 ms. Numbers depend on the machine; compare the rows of
one run with each other.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tests.lua.harness import (
    LOG_HOOK,
    Feed,
    feed_http,
    feed_server,
    nginx_conf,
    peer,
    readable_copy,
    upstream,
)

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin") or "nginx"
TOKEN = "bench-token-0b7e2c"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(conf.with_suffix(".stderr"), "ab")  # noqa: SIM115 - lives with nginx
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-e", "stderr", "-g", "daemon off;"], stdout=log, stderr=log
    )
    wait_for(port)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)


def backend_conf(work: Path, ports: tuple[int, int]) -> Path:
    conf = work / "backend.conf"
    listens = "".join(f"listen 127.0.0.1:{p}; " for p in ports)
    conf.write_text(
        f"""worker_processes 1;
pid {work}/backend.pid;
error_log {work}/backend.log;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    keepalive_requests 100000;
    server {{ {listens} location / {{ return 200 'ok'; }} }}
}}
"""
    )
    return conf


def gateway_conf(
    work: Path, port: int, status: int, backends: tuple[int, int], workers: int
) -> Path:
    lua = readable_copy(work)
    plan = {
        "generation": 1,
        "upstreams": {"dyn": {}},
        "services": {"dyn": {"peers": [peer(p) for p in backends]}},
    }
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in backends)
    proxy = """proxy_http_version 1.1;
            proxy_set_header Connection "";"""
    http = (
        feed_http(lua, plan, TOKEN, log_hook=False)
        + upstream("dyn", keepalive=32)
        + f"""
    upstream stock {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 100000;
        location /stock/ {{ proxy_pass http://stock; {proxy} }}
        location /dyn/ {{
            proxy_pass http://dyn; {proxy}
        {LOG_HOOK}
        }}
    }}"""
        + feed_server(status)
    )
    conf = work / "gateway.conf"
    conf.write_text(nginx_conf(work, http, workers=workers, log_level="warn"))
    return conf


def to_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise SystemExit(f"cannot read a wrk latency: {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    if not (rps and p99):
        raise SystemExit(f"cannot read wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"{url} answered errors under load:\n{out}")
    return float(rps.group(1)), to_ms(p99.group(1))


def push_latency(feed: Feed, backends: tuple[int, int], pushes: int) -> list[float]:
    """Seconds from each POST until every worker reports its generation."""
    times = []
    status = feed.status()
    generation = status["generation"]
    for i in range(pushes):
        generation += 1
        weights = (1 + i % 5, 5 - i % 5)
        body = {
            "generation": generation,
            "services": {
                "dyn": {
                    "peers": [peer(p, weight=w) for p, w in zip(backends, weights, strict=True)]
                }
            },
        }
        start = time.monotonic()
        r = feed.push(body)
        if r.status_code != 200:
            raise SystemExit(f"push refused: {r.text}")
        while True:
            s = feed.status()
            if s["converged"] and s["generation"] == generation:
                break
            if time.monotonic() - start > 5:
                raise SystemExit(f"workers did not converge: {s}")
            time.sleep(0.001)
        times.append(time.monotonic() - start)
        time.sleep(0.05)  # let the next push land at a random point of the poll interval
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per upstream")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--pushes", type=int, default=40)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-balancer-"))
    work.chmod(0o755)
    backends = (free_port(), free_port())
    port, status = free_port(), free_port()
    procs = [start(backend_conf(work, backends), backends[0])]
    results: dict[str, list[tuple[float, float]]] = {"stock": [], "dyn": []}
    try:
        procs.append(start(gateway_conf(work, port, status, backends, args.workers), port))
        wait_for(status)
        for name in results:  # warm both pools and the JIT before measuring
            wrk(f"http://127.0.0.1:{port}/{name}/", 2, args.connections)
        for r in range(args.rounds):
            order = ("stock", "dyn") if r % 2 == 0 else ("dyn", "stock")
            for name in order:
                results[name].append(
                    wrk(f"http://127.0.0.1:{port}/{name}/", args.seconds, args.connections)
                )
        pushes = push_latency(Feed(status, TOKEN), backends, args.pushes)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds each, "
        f"{args.workers} gateway worker(s), 2 loopback nginx peers, keepalive 32 on both"
    )
    print(f"{'upstream':<10} {'req/s (median)':>15} {'p99 ms (median)':>16}   rounds req/s")
    med = {}
    for name, rows in results.items():
        rps = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        med[name] = (rps, p99)
        each = " ".join(f"{r[0]:.0f}" for r in rows)
        print(f"{name:<10} {rps:>15.0f} {p99:>16.3f}   {each}")
    ratio = med["dyn"][0] / med["stock"][0]
    delta = med["dyn"][1] - med["stock"][1]
    print(
        f"dyn/stock throughput {ratio:.1%} (goal >= 90%: {'met' if ratio >= 0.9 else 'MISSED'}), "
        f"p99 {delta:+.3f} ms (goal <= +0.2 ms: {'met' if delta <= 0.2 else 'MISSED'})"
    )
    ms = sorted(t * 1000 for t in pushes)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * len(ms))) - 1)]
    verdict = "met" if p95 <= 100 else "MISSED"
    print(
        f"push -> every worker serves it ({len(ms)} pushes): p50 {statistics.median(ms):.1f} ms, "
        f"p95 {p95:.1f} ms, max {ms[-1]:.1f} ms (goal <= 100 ms: {verdict})"
    )


if __name__ == "__main__":
    main()
