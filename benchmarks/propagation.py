"""How fast a registry change reaches the adapter: the change → wait() returns → read()
shows it, for each registry with a watch.

- etcd: a real etcd on free loopback ports; the change is a put or delete of an instance
  (so the time includes etcd committing the write).
- kubernetes: the in-process API server of the tests (tests/helpers/kubernetes.py); the
  change is the watch event of an EndpointSlice gaining or losing a pod.
- file: services.yaml in a temp directory, the default `poll` (1 s); the change is a
  rename into place and, apart, an in-place write (open, write, close), both noticed
  through inotify; and the same rename with inotify unavailable (the poll alone, what
  the file registry did before it had inotify).

Rounds alternate between the kinds (and which goes first), so a busy moment on the
shared machine hits all of them; percentiles are over every change of a kind.

    python benchmarks/propagation.py [--rounds 5] [--changes 20]

Goal (issue 3): p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nginxgen.sources.base import Source  # noqa: E402
from nginxgen.sources.etcd import EtcdSource  # noqa: E402
from nginxgen.sources.file import FileSource  # noqa: E402
from nginxgen.sources.kubernetes import KubernetesSource  # noqa: E402
from nginxgen.spec import EtcdRegistry, FileRegistry, KubernetesRegistry  # noqa: E402
from nginxgen.util.inotify import DirectoryWatch, InotifyUnavailable  # noqa: E402
from tests.helpers import Etcd  # noqa: E402
from tests.helpers.kubernetes import FakeKubeAPI, endpoint, endpoint_slice  # noqa: E402

GOAL_MS = 100.0
REFERENCE = "file polled"  # what the file registry did without inotify: for comparison


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


class Kind:
    """One registry under test: its source, and how to make change n. `during_wait`: the
    change is made while wait() blocks, at a random moment of the first second (a poll's
    phase), instead of just before it (a watch stream queues what came before)."""

    def __init__(
        self, name: str, source: Source, change: Callable[[int], None], during_wait: bool = False
    ) -> None:
        self.name, self.source, self.change = name, source, change
        self.during_wait = during_wait
        self.rng = random.Random(7)
        self.catalog = source.read()
        source.wait(self.catalog.version, timeout=0.2)  # opens the watch
        self.samples: list[float] = []

    def run(self, changes: int) -> None:
        for n in range(changes):
            present = n % 2 == 0
            made: list[float] = []
            timer = threading.Timer(self.rng.uniform(0.02, 1.0), self._make, (n, made))
            if self.during_wait:
                timer.start()
            else:
                self._make(n, made)
            while True:
                if not self.source.wait(self.catalog.version, timeout=5):
                    raise RuntimeError(f"{self.name}: change {n} was not seen within 5s")
                self.catalog = self.source.read()
                if bool(self.catalog.services.get("bench")) == present:
                    break
            seen = time.perf_counter()
            if self.during_wait:
                timer.join()
            self.samples.append(seen - made[0])

    def _make(self, n: int, made: list[float]) -> None:
        made.append(time.perf_counter())
        self.change(n)


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


def file_kind(work: Path, name: str, in_place: bool, inotify: bool) -> Kind:
    work.mkdir()
    path = work / "services.yaml"
    present = {"services": {"bench": [{"id": "i1", "address": "127.0.0.1:9000"}]}}
    absent: dict[str, Any] = {"services": {"bench": []}}

    def change(n: int) -> None:
        text = json.dumps(present if n % 2 == 0 else absent)
        if in_place:
            path.write_text(text)
        else:
            (work / ".services.tmp").write_text(text)
            os.replace(work / ".services.tmp", path)

    def unavailable(directory: Path) -> DirectoryWatch:
        raise InotifyUnavailable("off for this benchmark")

    path.write_text(json.dumps(absent))
    config = FileRegistry(kind="file", path=str(path))
    source = FileSource(config) if inotify else FileSource(config, watch=unavailable)
    return Kind(name, source, change, during_wait=True)


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
        kinds = [
            etcd_kind(etcd.url),
            kubernetes_kind(api, token),
            file_kind(Path(tmp) / "f1", "file rename", in_place=False, inotify=True),
            file_kind(Path(tmp) / "f2", "file inplace", in_place=True, inotify=True),
            file_kind(Path(tmp) / "f3", "file polled", in_place=False, inotify=False),
        ]
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
        ok = ok and (p95 < GOAL_MS or kind.name == REFERENCE)  # the 'before', shown
        print(
            f"{kind.name:<12}{len(ms):>8}{statistics.median(ms):>8.1f}ms"
            f"{p95:>8.1f}ms{max(ms):>8.1f}ms"
        )
    print(f"goal p95 < {GOAL_MS:g} ms for every kind: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
