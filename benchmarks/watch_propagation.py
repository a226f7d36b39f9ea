"""How fast `nginxgen watch` follows the registry, and what one change costs at scale.

    PYTHONPATH=. python benchmarks/watch_propagation.py [--changes 20] [--services 10000]
        [--registry file|etcd|both]

1. Propagation (real nginx, real backends; the file registry and a real etcd): from the
   registry write to the first request answered by the new backend through nginx;
   p50/p95 over N changes. Goal: p95 <= debounce min + 300 ms.
2. Scale: applying one instance change with 10,000 services (guard, flap damping, plan,
   render, verify, change log) as a share of a full render from cold caches. Goal: <= 5 %.
   Printed with and without `nginx -t`, which always checks the whole file.

Measured on the 2-core test machine (3 runs): propagation p50 362-363 ms, p95 371-405 ms;
one change 0.068-0.089 s vs a full render of 2.31-2.80 s = 2.4-3.7 % (before this round:
0.40 s vs 4.5 s = 8.4-8.9 %; the full render also got twice as fast, see render_scale.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processes import Watched, watched_nginx  # noqa: E402

from nginxgen.deploy.nginx_bin import find_binary  # noqa: E402
from nginxgen.model.catalog import Catalog, Instance  # noqa: E402
from nginxgen.pipeline import BuildCache, build, ensure_runtime_dirs  # noqa: E402
from nginxgen.spec import RemovalGuard, Spec  # noqa: E402
from nginxgen.spec.watch import Flap  # noqa: E402
from nginxgen.util.heap import Settler  # noqa: E402
from nginxgen.watch.diff import diff_plans  # noqa: E402
from nginxgen.watch.flap import FlapDamper  # noqa: E402
from nginxgen.watch.guard import RemovalHold  # noqa: E402
from nginxgen.watch.telemetry import Metrics  # noqa: E402
from tests.helpers import Backend, Etcd, free_port, wait_for_port  # noqa: E402

DEBOUNCE_MIN = 0.2


class FileRegistry:
    """services.yaml, replaced atomically; the watcher notices through inotify (its
    content check every `poll` is only the backstop)."""

    label = "file registry (inotify)"

    def __init__(self, work: Path) -> None:
        self.work = work

    def spec(self) -> dict[str, Any]:
        return {"kind": "file", "path": "services.yaml"}

    def write(self, backend: Backend) -> None:
        tmp = self.work / ".services.tmp"
        entry = {"id": backend.name, "address": backend.address}
        tmp.write_text(yaml.safe_dump({"services": {"app": [entry]}}))
        os.replace(tmp, self.work / "services.yaml")

    def close(self) -> None:
        pass


class EtcdRegistry:
    """A real etcd; the watcher follows it through a watch stream. Each change is one
    transaction (put the new instance, delete the old one), as one revision: two separate
    writes could be read in between, and an emptied service is held by the guard."""

    label = "etcd watch"

    def __init__(self, work: Path) -> None:
        self.etcd = Etcd(work / "etcd-data").start()
        self.http = requests.Session()
        self.http.trust_env = False

    def spec(self) -> dict[str, Any]:
        return {"kind": "etcd", "url": self.etcd.url}

    def write(self, backend: Backend) -> None:
        value = json.dumps({"address": backend.address})
        ops: list[dict[str, Any]] = [
            {"request_put": {"key": _b64(f"/services/app/{backend.name}"), "value": _b64(value)}}
        ]
        ops += [
            {"request_delete_range": {"key": _b64(f"/services/app/{other}")}}
            for other in ("a", "b")
            if other != backend.name
        ]
        r = self.http.post(f"{self.etcd.url}/v3/kv/txn", json={"success": ops}, timeout=5)
        r.raise_for_status()

    def close(self) -> None:
        self.http.close()
        self.etcd.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def propagation(changes: int, kind: str) -> list[float]:
    work = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    work.chmod(0o755)
    registry: FileRegistry | EtcdRegistry = (
        EtcdRegistry(work) if kind == "etcd" else FileRegistry(work)
    )
    a, b = Backend("a").start(), Backend("b").start()
    port, health = free_port(), free_port()
    spec = {
        "registry": registry.spec(),
        "nginx": watched_nginx(port),
        "watch": {"listen": f"127.0.0.1:{health}", "debounce": {"min": "200ms", "max": "2s"}},
        "routes": [{"path": "/", "service": "app"}],
    }
    (work / "nginxgen.yaml").write_text(yaml.safe_dump(spec))
    registry.write(a)
    gw = Watched(work / "nginxgen.yaml", port, {**os.environ, "PYTHONPATH": str(REPO)})
    latencies: list[float] = []
    try:
        wait_for_port(health, 30)
        url = f"http://127.0.0.1:{port}/"
        with requests.Session() as http:
            http.trust_env = False
            for i in range(changes):
                target = b if i % 2 == 0 else a
                time.sleep(0.3)  # let the previous reload's old workers leave
                start = time.monotonic()
                registry.write(target)
                while True:
                    r = http.get(url, headers={"Connection": "close"}, timeout=5)
                    if r.headers.get("X-Backend") == target.name:
                        break
                    if time.monotonic() - start > 30:
                        raise RuntimeError(f"change {i} not served after 30s; see {work}/watch.log")
                latencies.append(time.monotonic() - start)
    finally:
        gw.stop()
        registry.close()
        a.stop()
        b.stop()
        shutil.rmtree(work, ignore_errors=True)
    return latencies


def scale(services: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="nginxgen-scale-"))
    spec = Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {
                "flavor": "nginx",
                "listen": free_port(),
                "output": str(work / "nginx.conf"),
                "pid": str(work / "nginx.pid"),
            },
            "routes": [{"path": f"/s{i}/", "service": f"s{i}"} for i in range(services)],
        }
    )
    ensure_runtime_dirs(spec)

    def catalog(weight: int) -> Catalog:
        return Catalog(
            {
                f"s{i}": (
                    Instance(f"s{i}-1", f"s{i}", "127.0.0.1", 10000 + i % 50000),
                    Instance(f"s{i}-2", f"s{i}", "127.0.0.2", 10000 + i % 50000, weight=weight)
                    if i == services // 2
                    else Instance(f"s{i}-2", f"s{i}", "127.0.0.2", 10000 + i % 50000),
                )
                for i in range(services)
            }
        )

    binary = find_binary(spec.nginx)
    before, after = catalog(1), catalog(7)
    out: dict[str, float] = {}
    for label, nginx_bin in (("", None), ("_nginx_t", binary)):
        cache = BuildCache()  # cold: no plans, block texts, verified blocks or digests yet
        t = time.perf_counter()
        first = build(spec, before, binary=nginx_bin, cache=cache)
        out["full" + label] = time.perf_counter() - t
        assert first.verdict.ok, first.verdict.findings[:3]
        Settler().settle()  # what the watcher does after each apply
        hold, metrics = RemovalHold(RemovalGuard()), Metrics()
        flaps = FlapDamper(Flap())
        flaps.observe(before, 0.0)
        metrics.set_catalog(before)
        t = time.perf_counter()
        flaps.observe(after, 1.0)  # the watcher counts flaps on every read
        effective = flaps.apply(hold.check(before, after, 0.0).catalog, 1.0).catalog
        second = build(spec, effective, binary=nginx_bin, cache=cache)
        change = diff_plans(first.plan, second.plan)
        metrics.set_catalog(effective)
        out["one_change" + label] = time.perf_counter() - t
        assert second.verdict.ok and change.reweighted, change
    shutil.rmtree(work, ignore_errors=True)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--services", type=int, default=10_000, help="0: skip the scale run")
    parser.add_argument("--registry", choices=("file", "etcd", "both"), default="both")
    args = parser.parse_args()

    goal = DEBOUNCE_MIN + 0.3
    for kind in ("file", "etcd") if args.registry == "both" else (args.registry,):
        lat = propagation(args.changes, kind)
        label = FileRegistry.label if kind == "file" else EtcdRegistry.label
        print(f"propagation, {label}, debounce 200ms..2s, {len(lat)} changes:")
        print(f"  p50 {statistics.median(lat) * 1000:7.0f} ms")
        p95 = pct(lat, 0.95)
        verdict = "met" if p95 <= goal else "MISSED"
        print(f"  p95 {p95 * 1000:7.0f} ms   goal <= {goal * 1000:.0f} ms: {verdict}")
        print(f"  max {max(lat) * 1000:7.0f} ms\n")
    if args.services <= 0:
        return

    s = scale(args.services)
    ratio = s["one_change"] / s["full"]
    ratio_t = s["one_change_nginx_t"] / s["full_nginx_t"]
    print(f"scale, {args.services} services x 2 instances, one instance reweighted:")
    print(f"  full render (plan, render, crossplane, round-trip)  {s['full']:7.3f} s")
    print(f"  one change  (guard, flaps, plan, render, verify, diff)     {s['one_change']:7.3f} s")
    print(f"  ratio {ratio:6.1%}   goal <= 5%: {'met' if ratio <= 0.05 else 'MISSED'}")
    print(
        f"  with nginx -t on the whole file: full {s['full_nginx_t']:.3f} s, one change "
        f"{s['one_change_nginx_t']:.3f} s, ratio {ratio_t:.1%}"
    )


if __name__ == "__main__":
    main()
