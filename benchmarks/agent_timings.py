"""How fast the registry follows a unit through `nginxgen agent` (real etcd, real backend).

    PYTHONPATH=. python benchmarks/agent_timings.py [--runs 3] [--ttl 3] [--interval 0.5]

Prints, per event, the time until etcd holds the new truth (median and worst of the runs):
start → registered, health failing → down, recovered → up, SIGTERM → draining,
SIGTERM → deleted (in-flight 0 ends the drain), SIGKILL → expired by the lease,
etcd restarted with its data wiped → registered again.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers import Backend, Etcd, seconds_until  # noqa: E402

KEY = "/services/app/app-1"


def until(check: Callable[[], bool], timeout: float = 60.0) -> float:
    """Seconds until `check` holds (polled every 20 ms)."""
    return seconds_until(check, timeout, "the agent's registration to change")


def state(etcd: Etcd) -> str | None:
    value, _ = etcd.get(KEY)
    return value["state"] if value else None


def one_run(tmp: Path, ttl: int, interval: float) -> dict[str, float]:
    etcd = Etcd(tmp / "etcd-data").start()
    app = Backend("app").start()
    app.body = b'{"inflight": 0}'
    spec = tmp / "nginxgen.yaml"
    registry, routes = {"kind": "etcd", "url": etcd.url}, [{"path": "/", "service": "app"}]
    spec.write_text(yaml.safe_dump({"registry": registry, "routes": routes}))
    args = [
        sys.executable, "-m", "nginxgen.cli", "agent", "-c", str(spec),
        "--service", "app", "--id", "app-1", "--address", app.address, "--ttl", f"{ttl}s",
        "--health-url", f"http://{app.address}/healthz", "--health-interval", f"{interval}s",
        "--rise", "2", "--fall", "3", "--drain", "30s", "--drain-min", "0s",
        "--inflight-url", f"http://{app.address}/inflight",
    ]  # fmt: skip
    out: dict[str, float] = {}
    log = open(tmp / "agent.log", "ab")
    try:
        agent = subprocess.Popen(args, stderr=log)
        out["start → registered (incl. Python start)"] = until(lambda: state(etcd) is not None)
        until(lambda: state(etcd) == "up")
        time.sleep(interval)
        app.health_status = 500
        out[f"health fails → down (fall 3 × {interval}s)"] = until(lambda: state(etcd) == "down")
        app.health_status = 200
        out[f"health back → up (rise 2 × {interval}s)"] = until(lambda: state(etcd) == "up")
        etcd.restart(wipe=True)
        out["etcd wiped+restarted → registered again"] = until(lambda: state(etcd) == "up")
        time.sleep(0.5)
        agent.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        until(lambda: state(etcd) != "up")
        out["SIGTERM → draining"] = time.monotonic() - t0
        until(lambda: state(etcd) is None)
        out["SIGTERM → deleted (in-flight 0)"] = time.monotonic() - t0
        agent.wait(30)
        agent = subprocess.Popen(args, stderr=log)
        until(lambda: state(etcd) == "up")
        agent.kill()
        agent.wait()
        out[f"SIGKILL → expired (ttl {ttl}s)"] = until(lambda: state(etcd) is None)
    finally:
        if agent.poll() is None:
            agent.kill()
        log.close()
        app.stop()
        etcd.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ttl", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.5)
    opts = ap.parse_args()
    results: dict[str, list[float]] = {}
    for _ in range(opts.runs):
        with tempfile.TemporaryDirectory(prefix="nginxgen-agent-bench-") as tmp:
            for name, seconds in one_run(Path(tmp), opts.ttl, opts.interval).items():
                results.setdefault(name, []).append(seconds)
    width = max(map(len, results))
    print(f"{'event':<{width}}  median    worst   ({opts.runs} runs)")
    for name, values in results.items():
        print(f"{name:<{width}}  {statistics.median(values):5.2f}s  {max(values):6.2f}s")


if __name__ == "__main__":
    main()
