"""How fast a registry change reaches the adapter: etcd put → wait() returns → read() shows it.

Starts a real etcd on free loopback ports, opens the etcd adapter's watch, then makes
N changes (alternating put and delete of an instance) one after another and times each
from just before the write until read() returns a catalog that reflects it.

    python benchmarks/propagation.py [--changes 50]

Goal (issue 3): p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nginxgen.sources.etcd import EtcdSource  # noqa: E402
from nginxgen.spec import EtcdRegistry  # noqa: E402
from tests.helpers import Etcd  # noqa: E402


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nginxgen-bench-") as tmp:
        etcd = Etcd(Path(tmp) / "data").start()
        try:
            samples = run(etcd.url, args.changes)
        finally:
            etcd.stop()

    ms = [s * 1000 for s in samples]
    rows = [
        ("changes", f"{len(ms)}"),
        ("p50", f"{statistics.median(ms):.1f} ms"),
        ("p95", f"{percentile(ms, 95):.1f} ms"),
        ("max", f"{max(ms):.1f} ms"),
        ("mean", f"{statistics.mean(ms):.1f} ms"),
    ]
    print("etcd put/delete → EtcdSource.wait() → read() shows the change")
    print(f"{'metric':<10}{'value':>12}")
    for name, value in rows:
        print(f"{name:<10}{value:>12}")
    ok = percentile(ms, 95) < 100
    print(f"goal p95 < 100 ms: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def run(url: str, changes: int) -> list[float]:
    http = requests.Session()
    http.trust_env = False
    key = "/services/bench/i1"
    value = b64(json.dumps({"address": "127.0.0.1:9000"}))
    src = EtcdSource(EtcdRegistry(kind="etcd", url=url))
    samples = []
    try:
        catalog = src.read()
        src.wait(catalog.version, timeout=0.2)  # opens the watch stream
        for n in range(changes):
            present = n % 2 == 0
            started = time.perf_counter()
            if present:
                http.post(f"{url}/v3/kv/put", json={"key": b64(key), "value": value}, timeout=5)
            else:
                http.post(f"{url}/v3/kv/deleterange", json={"key": b64(key)}, timeout=5)
            while True:
                if not src.wait(catalog.version, timeout=5):
                    raise RuntimeError(f"change {n} was not seen within 5s")
                catalog = src.read()
                if bool(catalog.services.get("bench")) == present:
                    break
            samples.append(time.perf_counter() - started)
    finally:
        src.close()
    return samples


if __name__ == "__main__":
    sys.exit(main())
