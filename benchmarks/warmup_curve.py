"""Measure the warm-up curve through a real nginx: the new instance's share per step.

    PYTHONPATH=. python benchmarks/warmup_curve.py [--old 2] [--step 10] [--requests 400]

Starts `--old` backends that have served for a day and one that just registered (all base
weight 1), renders with nginxgen at each warm-up step boundary (the clock is advanced to
each boundary as the watch loop's schedule hook would; nobody waits 30 s per step),
reloads nginx, and counts who answers. Prints one row per step.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
import yaml

from nginxgen.pipeline import BuildCache, build, ensure_runtime_dirs
from nginxgen.sources.file import FileSource
from nginxgen.spec import load_spec
from nginxgen.util.atomic_write import write_atomic
from nginxgen.watch.policy_state import PolicyState
from tests.helpers import Backend, find_nginx, free_port, wait_for_port, world_readable_dir


def workers(master: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                out.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def count(url: str, n: int, threads: int = 8) -> Counter[str]:
    def batch(k: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        with requests.Session() as s:
            s.trust_env = False
            for _ in range(k):
                seen[s.get(url, timeout=10).headers.get("X-Backend", "?")] += 1
        return seen

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(batch, [n // threads] * threads), Counter())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", type=int, default=2, help="instances already serving")
    ap.add_argument("--step", type=int, default=10, help="warmup.step_percent")
    ap.add_argument("--period", default="30s", help="warmup.period")
    ap.add_argument("--requests", type=int, default=400, help="requests per step")
    args = ap.parse_args()

    work = world_readable_dir("nginxgen-warmup-")
    port = free_port()
    olds = [Backend(f"old{i}").start() for i in range(args.old)]
    new = Backend("new").start()
    found = find_nginx()
    if found is None:
        raise SystemExit("nginx is not installed (apt-get install nginx; scripts/test does it)")
    nginx = found.path
    proc: subprocess.Popen[bytes] | None = None
    try:
        spec_doc = {
            "registry": {"kind": "file", "path": "services.yaml"},
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{port}",
                "output": "nginx.conf",
                "pid": "nginx.pid",
                "worker_processes": 1,
            },
            "defaults": {"warmup": {"step_percent": args.step, "period": args.period}},
            "routes": [{"path": "/", "service": "app"}],
        }
        (work / "nginxgen.yaml").write_text(yaml.safe_dump(spec_doc))
        spec = load_spec(work / "nginxgen.yaml")
        ensure_runtime_dirs(spec)
        t0 = datetime.now(timezone.utc)
        day_ago = t0 - timedelta(days=1)
        services = [
            {"id": b.name, "address": b.address, "registered_at": day_ago.isoformat()} for b in olds
        ]
        registry = work / "services.yaml"
        registry.write_text(yaml.safe_dump({"services": {"app": services}}))
        state = PolicyState(work / "state.json")
        state.observe(FileSource(spec.registry).read(), t0)  # the gateway before the new one
        # The new instance carries no registered_at: its age counts from when it is first seen.
        services.append({"id": "new", "address": new.address})
        registry.write_text(yaml.safe_dump({"services": {"app": services}}))
        catalog = FileSource(spec.registry).read()

        print(
            f"{args.old} old instances + 1 new, base weight 1 each; warmup "
            f"{args.step}% every {args.period}; {args.requests} requests per step"
        )
        print(f"{'step':>4} {'age':>7} {'new w':>6} {'old w':>6} {'expected':>9} {'measured':>9}")
        now, step = t0, 0
        cache = BuildCache()  # as a watcher keeps one
        while True:
            step += 1
            observed = state.observe(catalog, now)
            result = build(spec, catalog, binary=None, cache=cache, now=now, observed=observed)
            assert result.verdict.ok, result.verdict.findings
            write_atomic(spec.nginx.output, result.text)
            if proc is None:
                proc = subprocess.Popen(
                    [nginx, "-c", spec.nginx.output, "-e", "stderr", "-g", "daemon off;"],
                    stderr=subprocess.DEVNULL,
                )
                wait_for_port(port)
            else:
                old = workers(proc.pid)
                proc.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 15
                while (workers(proc.pid) & old or not workers(proc.pid)) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.02)
            (up,) = result.plan.upstreams
            w = {s.instance_id: s.weight for s in up.servers}
            expected = w["new"] / sum(w.values())
            seen = count(f"http://127.0.0.1:{port}/x", args.requests)
            measured = seen["new"] / sum(seen.values())
            age = (now - t0).total_seconds()
            print(
                f"{step:>4} {age:>6.0f}s {w['new']:>6} {w['old0']:>6} "
                f"{expected:>9.1%} {measured:>9.1%}"
            )
            if result.plan.next_change_at is None:
                break
            now = result.plan.next_change_at
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(10)
        for b in [*olds, new]:
            b.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
