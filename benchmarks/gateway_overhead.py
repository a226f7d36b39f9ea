"""What the gateway's metrics cost per request: wrk against nginxgen-rendered gateways with
`nginx.metrics` off and on, in interleaved rounds, medians compared in the same run.

One run starts a backend nginx (answers 200 itself), an auth backend, a redis-server, and
two gateways rendered by nginxgen from the same spec, one worker each, side by side: one
with `metrics: false`, one with `metrics: true` (the default), both with the same
`endpoints` mode (`--endpoints`, default dynamic: the default of a gateway with metrics
on; left to its default, `metrics: false` would also switch the "off" gateway to reload
mode and the comparison would price the Lua balancer with the metrics). Each has these
routes:

  /plain/    a plain proxy route
  /hit/      a cached route, answered from Redis (filled once before the rounds)
  /limited/  a rate-limited route (limit far above the load)
  /keyed/    an API key route
  /sso/      an auth_request route

Rounds go off, on, on, off, off, on, ... per route (the order flips every round so neither
variant always runs first), at least 5 of each; medians, then on/off. /metrics is scraped
every second during the "on" runs, as a Prometheus with a 1 s interval would.

Besides requests/s, each run reads the gateway worker's CPU time (/proc/PID/schedstat) and
divides it by the requests wrk saw answered. On a machine shared with other work, requests/s
moves with the neighbours; CPU per request moves less, and off/on of it is the requests/s
ratio a saturated worker would show.

When `perf` is installed, a last pass samples each gateway worker's CPU (perf record -e
cpu-clock) during more runs of the gated routes and prints the share of its samples spent
in Lua (LuaJIT, its JIT-compiled code, lua-nginx-module). The share is a ratio inside one
process, so neighbours hardly move it: on minus off is what the metrics hook costs, and
1 - that is on/off for a worker that only does this.

    python benchmarks/gateway_overhead.py [--rounds 7] [--seconds 3] [--connections 32]
                                          [--endpoints dynamic|reload]

Goal (issue 18): metrics on >= 90 % of off, for the plain proxy and the cache hit.
Numbers depend on the machine; compare the columns of one run, not runs on two machines.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processes import nginx_cmd, render, start, stop  # noqa: E402
from wrk import wrk  # noqa: E402

from tests.helpers import find_tool, free_port  # noqa: E402

KEY = "bench-key-5f0c2a9e7d"
GOAL = 0.90
GATED = ("/plain/", "/hit/")  # the routes the goal is about
ROUTES: tuple[tuple[str, str | None], ...] = (
    ("/plain/", None),
    ("/hit/", None),
    ("/limited/", None),
    ("/keyed/", f"X-Api-Key: {KEY}"),
    ("/sso/", None),
)


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


@dataclass(frozen=True)
class Gateway:
    name: str  # "off" | "on"
    port: int
    status: int


def gateway_conf(
    work: Path, gw: Gateway, backend: int, auth: int, redis: int, endpoints: str = "dynamic"
) -> Path:
    """nginxgen's rendering of the one spec, with metrics off or on; `endpoints` is set
    explicitly so that both variants balance the same way."""
    (work / "keys.txt").write_text(KEY + "\n")
    (work / "services.yaml").write_text(
        yaml.safe_dump({"services": {"app": [{"id": "a", "address": f"127.0.0.1:{backend}"}]}})
    )
    spec = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": {
            "flavor": "nginx",
            "listen": f"127.0.0.1:{gw.port}",
            "status_listen": f"127.0.0.1:{gw.status}",
            "pid": f"{gw.name}.pid",
            "worker_processes": 1,
            "metrics": gw.name == "on",
            "endpoints": endpoints,
        },
        "redis": {"host": "127.0.0.1", "port": redis, "pool_size": 64},
        "routes": [
            {"path": "/plain/", "service": "app"},
            {"path": "/hit/", "service": "app", "cache": {"ttl": "1h"}},
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
    path = work / f"{gw.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return render(path, work / f"{gw.name}.conf")


def worker_of(master: int) -> int:
    """The PID of the (single) worker of nginx master `master`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                return int(stat.parent.name)
        time.sleep(0.05)
    raise SystemExit(f"nginx {master} has no worker")


def cpu_ns(pid: int) -> int:
    """Nanoseconds pid has run on a CPU (the scheduler's own count)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def load(url: str, seconds: int, connections: int, header: str | None) -> tuple[float, int]:
    """Requests/s, and how many requests wrk saw answered (any non-2xx ends the run)."""
    run = wrk(url, seconds, connections, header=header)
    return run.rps, run.requests


class Scraper:
    """Scrapes /metrics every second while it runs."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as r:  # noqa: S310 - loopback
                r.read()

    def __enter__(self) -> Scraper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


LUA_DSOS = ("libluajit", "ngx_http_lua_module", "[JIT]")


def lua_share(pid: int, url: str, seconds: int, connections: int, work: Path) -> float | None:
    """The share of `pid`'s CPU samples in Lua while wrk loads `url`; None without perf."""
    perf = find_tool("perf")
    if perf is None:
        return None
    data = work / "perf.data"
    cmd = [perf, "record", "-q", "-e", "cpu-clock", "-F", "2999", "-p", str(pid), "-o", str(data)]
    rec = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    load(url, seconds, connections, None)
    rec.send_signal(signal.SIGINT)
    rec.wait(30)
    report = [perf, "report", "-i", str(data), "--sort", "dso", "-q", "-g", "none", "--stdio"]
    out = subprocess.run(report, capture_output=True, text=True, timeout=60).stdout
    if rec.returncode not in (0, -signal.SIGINT) or not out.strip():
        return None  # perf cannot sample here (a container without perf events)
    share = 0.0
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*)", line)
        if m and any(d in m.group(2) for d in LUA_DSOS):
            share += float(m.group(1)) / 100
    return share


def counted(status: int) -> float:
    """nginxgen_requests_total summed over every series, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{status}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nginxgen_requests_total{")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (>= 5)")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--endpoints", choices=("dynamic", "reload"), default="dynamic", help="both gateways"
    )
    args = parser.parse_args()
    if args.rounds < 5:
        raise SystemExit("--rounds must be at least 5")
    redis_server = find_tool("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server is not installed (scripts/test installs it)")

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    work.chmod(0o755)
    backend, auth, redis = free_port(), free_port(), free_port()
    gateways = [Gateway(name, free_port(), free_port()) for name in ("off", "on")]
    procs: list[subprocess.Popen[bytes]] = []
    rps: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}  # µs of worker CPU per request
    try:
        redis_cmd = [redis_server, "--port", str(redis), "--bind", "127.0.0.1"]
        redis_cmd += ["--save", "", "--appendonly", "no", "--dir", str(work)]
        procs.append(start(redis_cmd, redis, work / "redis.log"))
        procs.append(
            start(nginx_cmd(backend_conf(work, backend, auth)), backend, work / "backend.log")
        )
        workers = {}
        for gw in gateways:
            conf = gateway_conf(work, gw, backend, auth, redis, args.endpoints)
            proc = start(nginx_cmd(conf), gw.port, work / f"{gw.name}.log")
            procs.append(proc)
            workers[gw.name] = worker_of(proc.pid)
        answered = 0  # by the "on" gateway, as wrk saw them
        for route, header in ROUTES:  # warm up: connections, JIT traces, the cache fill
            for gw in gateways:
                _, n = load(f"http://127.0.0.1:{gw.port}{route}", 1, args.connections, header)
                answered += n if gw.name == "on" else 0
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", file=sys.stderr, flush=True)
            for route, header in ROUTES:
                for gw in gateways if i % 2 == 0 else gateways[::-1]:
                    url = f"http://127.0.0.1:{gw.port}{route}"
                    used = cpu_ns(workers[gw.name])
                    if gw.name == "on":
                        with Scraper(gw.status):
                            r, n = load(url, args.seconds, args.connections, header)
                        answered += n
                    else:
                        r, n = load(url, args.seconds, args.connections, header)
                    used = cpu_ns(workers[gw.name]) - used
                    rps.setdefault((route, gw.name), []).append(r)
                    cpu.setdefault((route, gw.name), []).append(used / 1000 / n)
        time.sleep(2.5)  # one flush, and the cached /metrics text expires
        total = counted(gateways[1].status)
        shares: dict[tuple[str, str], list[float]] = {}
        for i in range(3):
            for route in GATED:
                for gw in gateways if i % 2 == 0 else gateways[::-1]:
                    url = f"http://127.0.0.1:{gw.port}{route}"
                    share = lua_share(workers[gw.name], url, args.seconds, args.connections, work)
                    if share is not None:
                        shares.setdefault((route, gw.name), []).append(share)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds "
        f"per variant, 1 gateway worker each, endpoints {args.endpoints} on both, "
        f"{os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print()
    print("requests/s, medians")
    print(f"{'route':<10} {'off':>9} {'on':>9} {'on/off':>7}  rounds (off | on)")
    for route, _ in ROUTES:
        offs, ons = rps[(route, "off")], rps[(route, "on")]
        m_off, m_on = statistics.median(offs), statistics.median(ons)
        rounds = " ".join(f"{x:.0f}" for x in offs) + " | " + " ".join(f"{x:.0f}" for x in ons)
        print(f"{route:<10} {m_off:>9.0f} {m_on:>9.0f} {m_on / m_off:>7.1%}  {rounds}")
    print()
    print("gateway worker CPU per request (µs), medians; off/on = the req/s ratio of a saturated")
    print("worker")
    print(f"{'route':<10} {'off':>7} {'on':>7} {'off/on':>7} {'added':>6}  rounds (off | on)")
    verdicts = []
    for route, _ in ROUTES:
        offs, ons = cpu[(route, "off")], cpu[(route, "on")]
        m_off, m_on = statistics.median(offs), statistics.median(ons)
        if route in GATED:
            verdicts.append((route, statistics.median(rps[(route, "on")]), m_off / m_on))
        rounds = " ".join(f"{x:.1f}" for x in offs) + " | " + " ".join(f"{x:.1f}" for x in ons)
        print(
            f"{route:<10} {m_off:>7.1f} {m_on:>7.1f} {m_off / m_on:>7.1%} "
            f"{m_on - m_off:>6.1f}  {rounds}"
        )
    # wrk stops without waiting for the requests in flight; nginx still answers and
    # counts them: at most `connections` more per wrk run than wrk saw.
    runs = len(ROUTES) * (args.rounds + 1)
    print()
    print(
        f"/metrics counted {total:.0f} requests; wrk saw {answered} answered "
        f"(+ at most {runs * args.connections} in flight when wrk stopped)"
    )
    profiled = {}
    if shares:
        print()
        print("share of the gateway worker's CPU samples in Lua (perf), medians of 3 runs")
        print(f"{'route':<10} {'off':>7} {'on':>7} {'on/off':>7}")
        for route in GATED:
            if not (shares.get((route, "off")) and shares.get((route, "on"))):
                print(f"{route:<10} (perf took no samples of one of the gateways)")
                continue
            off, on = (statistics.median(shares[(route, v)]) for v in ("off", "on"))
            profiled[route] = 1 - (on - off)
            print(f"{route:<10} {off:>7.1%} {on:>7.1%} {profiled[route]:>7.1%}")
    else:
        print("(perf is not installed or cannot sample here: no Lua share)")
    for route, _, ratio in verdicts:
        r_off, r_on = (statistics.median(rps[(route, v)]) for v in ("off", "on"))
        print(
            f"goal {route}: on >= {GOAL:.0%} of off: CPU per request {ratio:.1%} "
            f"({'met' if ratio >= GOAL else 'MISSED'}), req/s {r_on / r_off:.1%} "
            f"({'met' if r_on / r_off >= GOAL else 'MISSED'})"
            + (f", Lua profile {profiled[route]:.1%}" if route in profiled else "")
        )


if __name__ == "__main__":
    main()
