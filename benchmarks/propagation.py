"""How fast a registry change reaches the adapter: the change → wait() returns → read()
shows it, for each registry with a watch.

- etcd: a real etcd on free loopback ports; the change is a put or delete of an instance
  (so the time includes etcd committing the write).
- kubernetes: the in-process API server of the tests (tests/helpers/kubernetes.py); the
  change is the watch event of an EndpointSlice gaining or losing a pod.

Rounds alternate between the kinds (and which goes first), so a busy moment on the
shared machine hits both; percentiles are over every change of a kind.

    python benchmarks/propagation.py [--rounds 5] [--changes 20]

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
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nginxgen.sources.base import Source  # noqa: E402
from nginxgen.sources.etcd import EtcdSource  # noqa: E402
from nginxgen.sources.kubernetes import KubernetesSource  # noqa: E402
from nginxgen.spec import EtcdRegistry, KubernetesRegistry  # noqa: E402
from tests.helpers import Etcd  # noqa: E402
from tests.helpers.kubernetes import FakeKubeAPI, endpoint, endpoint_slice  # noqa: E402

GOAL_MS = 100.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


class Kind:
    """One registry under test: its source, and how to make change n."""

    def __init__(self, name: str, source: Source, change: Callable[[int], None]) -> None:
        self.name, self.source, self.change = name, source, change
        self.catalog = source.read()
        source.wait(self.catalog.version, timeout=0.2)  # opens the watch
        self.samples: list[float] = []

    def run(self, changes: int) -> None:
        for n in range(changes):
            present = n % 2 == 0
            started = time.perf_counter()
            self.change(n)
            while True:
                if not self.source.wait(self.catalog.version, timeout=5):
                    raise RuntimeError(f"{self.name}: change {n} was not seen within 5s")
                self.catalog = self.source.read()
                if bool(self.catalog.services.get("bench")) == present:
                    break
            self.samples.append(time.perf_counter() - started)


def etcd_kind(url: str) -> Kind:
    http = requests.Session()
    http.trust_env = False
    key = "/services/bench/i1"
    value = b64(json.dumps({"address": "127.0.0.1:9000"}))

    def change(n: int) -> None:
        if n % 2 == 0:
            http.post(f"{url}/v3/kv/put", json={"key": b64(key), "value": value}, timeout=5)
        else:
            http.post(f"{url}/v3/kv/deleterange", json={"key": b64(key)}, timeout=5)

    return Kind("etcd", EtcdSource(EtcdRegistry(kind="etcd", url=url)), change)


def kubernetes_kind(api: FakeKubeAPI, token_file: Path) -> Kind:
    def change(n: int) -> None:
        pods = [endpoint("10.0.0.1", "bench-a")] if n % 2 == 0 else []
        api.apply(endpoint_slice("bench", "bench-x1", pods))

    api.apply(endpoint_slice("bench", "bench-x1", []))
    config = KubernetesRegistry(
        kind="kubernetes",
        api=api.url,
        namespace="shop",
        token_file=str(token_file),
        services=("bench",),
    )
    return Kind("kubernetes", KubernetesSource(config, ["bench"]), change)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--changes", type=int, default=20, help="per kind and round")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nginxgen-bench-") as tmp:
        etcd = Etcd(Path(tmp) / "data").start()
        api = FakeKubeAPI(token="bench-token").start()
        token = Path(tmp) / "token"
        token.write_text("bench-token")
        kinds = [etcd_kind(etcd.url), kubernetes_kind(api, token)]
        try:
            for r in range(args.rounds):
                for kind in kinds if r % 2 == 0 else kinds[::-1]:
                    kind.run(args.changes)
        finally:
            for kind in kinds:
                kind.source.close()
            api.stop()
            etcd.stop()

    print("registry change → Source.wait() returns → read() shows it")
    print(f"{'kind':<12}{'changes':>8}{'p50':>10}{'p95':>10}{'max':>10}")
    ok = True
    for kind in kinds:
        ms = [s * 1000 for s in kind.samples]
        p95 = percentile(ms, 95)
        ok = ok and p95 < GOAL_MS
        print(
            f"{kind.name:<12}{len(ms):>8}{statistics.median(ms):>8.1f}ms"
            f"{p95:>8.1f}ms{max(ms):>8.1f}ms"
        )
    print(f"goal p95 < {GOAL_MS:g} ms for every kind: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
