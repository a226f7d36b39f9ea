"""What the split decision costs per request: a route whose service has a `split` (Lua
picks the version's upstream: rules, then the sticky key's bucket) against a plain route
to the same backends, both rendered by nginxgen into one gateway. wrk runs against each in
interleaved rounds; the medians of req/s, the gateway worker's CPU time per request (what
other load on the machine skews least) and p50/p99 at low concurrency are compared in one
run. wrk sends a session cookie and a canary cookie no rule matches, so every request
walks the rules and hashes its key. Both routes are balanced as `nginx.endpoints` says
(the default, dynamic: the split is compared with a plain dynamic upstream).

    python benchmarks/split.py [--rounds 5] [--seconds 5] [--connections 32]

Goal (issue 15): p99 +0.1 ms or less over the plain route. On a shared machine p99 is the
scheduler's; read the CPU per request and p50 then.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from balancer import Run, backend_conf, cpu_seconds, start_nginx
from processes import render, stop
from split_gateway import split_gateway_spec
from wrk import wrk

from tests.helpers import free_port, nginx_workers, wait_for_port

ROUTES = ("plain", "split")
# A session key to hash and a canary cookie no rule matches: the whole decision runs.
HEADER = "Cookie: session=user-4711; canary=no"


def gateway_spec(work: Path, port: int, status: int, backends: tuple[int, int]) -> Path:
    rules = [
        {"header": "X-Canary", "equals": "1", "to": "green"},
        {"cookie": "canary", "matches": "^(always|yes)$", "to": "green"},
    ]
    return split_gateway_spec(work, port, status, backends, rules, name="gw")


def one_wrk(url: str, seconds: int, connections: int, pids: set[int] | None) -> Run:
    before = cpu_seconds(pids) if pids else 0.0
    run = wrk(url, seconds, connections, header=HEADER, socket_errors=False)
    used = cpu_seconds(pids) - before if pids else 0.0
    return Run(run.rps, run.p50_ms, run.p99_ms, used * 1e6 / run.requests)


def measure(
    port: int, pids: set[int], rounds: int, seconds: int, connections: int
) -> dict[str, Run]:
    runs: dict[str, list[Run]] = {name: [] for name in ROUTES}
    for r in range(rounds):
        for name in ROUTES if r % 2 == 0 else ROUTES[::-1]:
            url = f"http://127.0.0.1:{port}/{name}/"
            runs[name].append(one_wrk(url, seconds, connections, pids))
    return {
        name: Run(*(statistics.median(getattr(r, f) for r in rows) for f in Run._fields))
        for name, rows in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per route")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32, help="throughput runs")
    parser.add_argument("--calm", type=int, default=4, help="connections of the p99 runs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-split-"))
    work.chmod(0o755)
    backends = (free_port(), free_port())
    port, status = free_port(), free_port()
    procs = [start_nginx(backend_conf(work, backends), backends[0])]
    try:
        conf = render(gateway_spec(work, port, status, backends), work / "gw.conf")
        gateway = start_nginx(conf, port)
        procs.append(gateway)
        wait_for_port(status)
        pids = nginx_workers(gateway.pid)
        for name in ROUTES:  # warm the pools and the JIT before measuring
            one_wrk(f"http://127.0.0.1:{port}/{name}/", 2, args.connections, None)
        load = measure(port, pids, args.rounds, args.seconds, args.connections)
        calm = measure(port, pids, args.rounds, args.seconds, args.calm)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"wrk -t1 -d{args.seconds}s, {args.rounds} interleaved rounds each (medians), "
        "1 gateway worker, 2 loopback nginx backends, keepalive 32, metrics on for both"
    )
    load_col, calm_col = f"req/s -c{args.connections}", f"p50 / p99 ms -c{args.calm}"
    print(f"{'route':<6} {load_col:>11} {'CPU us/req':>11} {calm_col:>20}")
    for name in ROUTES:
        row, c = load[name], calm[name]
        print(f"{name:<6} {row.rps:>11.0f} {row.cpu_us:>11.1f} {c.p50_ms:>11.3f} / {c.p99_ms:.3f}")
    cpu = load["split"].cpu_us - load["plain"].cpu_us
    p50 = calm["split"].p50_ms - calm["plain"].p50_ms
    p99 = calm["split"].p99_ms - calm["plain"].p99_ms
    verdict = "met" if p99 <= 0.1 else "MISSED"
    print(
        f"split vs plain: CPU {cpu:+.1f} us per request, p50 {p50:+.3f} ms, "
        f"p99 {p99:+.3f} ms (goal <= +0.1 ms: {verdict})"
    )


if __name__ == "__main__":
    main()
