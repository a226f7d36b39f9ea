"""nginx.endpoints: dynamic against reload — what a push saves (docs/dynamic-endpoints.md).

    PYTHONPATH=. python benchmarks/dynamic_endpoints.py [--rounds 3] [--changes 10]
        [--registry file|etcd|both] [--churn 1000] [--services 10000] [--seconds 5]

1. Propagation (real nginx, real backends, the file registry and a real etcd): registry
   write → first request answered by the new backend, p50/p95, dynamic (push debounce
   20 ms) and reload (debounce 200 ms) side by side, in interleaved rounds; then, for
   dynamic, where the time went per stage (the sidecar's `stages_ms` log field: noticed,
   debounce, read, plan, push request, the client's first new answer after it, and what
   follows off that path: every worker confirming, the boot snapshot).
2. Churn: N endpoint-only changes (adds, removes, weights, drains) under continuous load:
   reloads counted by nginx's worker PIDs, failed requests counted by the client.
3. One endpoint change among S services in a real etcd, followed by an in-process
   `nginxgen watch` pushing to a real nginx: the sidecar's work from the watch event to
   the push leaving (catalog update, flap damping, guard, policies, plan, structure
   check, delta, push body), and after nginx confirmed it (snapshot, log, gauges); what
   the push carried, worker PIDs and RSS before and after; a full etcd read beside it.
4. Throughput: wrk through the Lua balancer vs a stock upstream, same keepalive,
   interleaved rounds: requests/s ratio and p99.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml
from balancer import backend_conf
from processes import nginx_cmd, start, stop
from watch_propagation import EtcdRegistry, FileRegistry, pct
from wrk import wrk

from tests.helpers import Backend, Nginx, free_port, nginx_workers, wait_for_port
from tests.helpers.servers import Etcd, settled_workers

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


class Gateway:
    """nginx + `nginxgen watch` on one registry, in `mode` (dynamic or reload)."""

    def __init__(self, mode: str, kind: str, backends: list[Backend]) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="nginxgen-dyn-"))
        self.work.chmod(0o755)
        self.registry = EtcdRegistry(self.work) if kind == "etcd" else FileRegistry(self.work)
        self.port, health = free_port(), free_port()
        spec = {
            "registry": self.registry.spec(),
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{self.port}",
                "output": "nginx.conf",
                "pid": "nginx.pid",
                "status_listen": f"127.0.0.1:{free_port()}",
                "worker_processes": 2,
                "endpoints": mode,
            },
            "watch": {
                "listen": f"127.0.0.1:{health}",
                "debounce": {"min": "200ms", "max": "2s"},
                "push_debounce": {"min": "20ms", "max": "200ms"},
                "flap": "off",  # the churn flips instances on purpose
            },
            "routes": [{"path": "/", "service": "app"}],
        }
        (self.work / "nginxgen.yaml").write_text(yaml.safe_dump(spec))
        self.registry.write(backends[0])
        cli = [
            sys.executable,
            "-m",
            "nginxgen.cli",
            "watch",
            "-c",
            str(self.work / "nginxgen.yaml"),
            "--log-format",
            "json",
        ]
        subprocess.run([*cli, "--once"], check=True, env=ENV, capture_output=True)
        self.nginx = Nginx(self.work / "nginx.conf", self.work / "nginx.pid").start(self.port)
        self.log = open(self.work / "watch.log", "wb")  # noqa: SIM115 - closed in close()
        self.watcher = subprocess.Popen(cli, env=ENV, stdout=self.log, stderr=self.log)
        wait_for_port(health, 30)
        self.url = f"http://127.0.0.1:{self.port}/"

    def workers(self) -> set[int]:
        return nginx_workers(int((self.work / "nginx.pid").read_text()))

    def close(self) -> None:
        self.watcher.send_signal(signal.SIGTERM)
        self.watcher.wait(30)
        self.log.close()
        self.nginx.stop()
        self.registry.close()


def first_served(gw: Gateway, target: Backend, http: requests.Session) -> tuple[float, float]:
    """(seconds from the registry write to the first answer from `target`, the write's
    wall time)."""
    wall, start = time.time(), time.monotonic()
    gw.registry.write(target)
    while True:
        r = http.get(gw.url, headers={"Connection": "close"}, timeout=5)
        if r.headers.get("X-Backend") == target.name:
            return time.monotonic() - start, wall
        if time.monotonic() - start > 30:
            raise RuntimeError(f"not served after 30s; see {gw.work}/watch.log")


STAGES = ("notice", "debounce", "read", "plan", "post", "served", "confirm", "snapshot")


def stages(log: Path, changes: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Per change (seconds to first served, write wall time): milliseconds per stage, from
    the push line the sidecar logged next after the write (its `stages_ms`). `notice` is
    what the log line's time leaves over (write → the loop woke); `served` is the client's
    first new answer after the push request returned (the other worker's pick-up, and the
    client's own next request)."""
    pushes = []
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("msg", "").startswith("pushed:") and entry.get("reason") == "registry":
            at = datetime.fromisoformat(entry["time"]).timestamp()
            pushes.append((at, entry["stages_ms"]))
    out = []
    for total, wall in changes:
        seen = next(((at, st) for at, st in pushes if at > wall), None)
        if seen is None:
            continue
        at, st = seen
        row = {k: float(st.get(k, 0.0)) for k in STAGES if k in st}
        row["notice"] = (at - wall) * 1000 - sum(row.values())
        before_post = sum(row[k] for k in ("notice", "debounce", "read", "plan", "post"))
        row["served"] = total * 1000 - before_post
        row["total"] = total * 1000
        out.append(row)
    return out


def propagation(
    rounds: int, changes: int, kinds: list[str]
) -> tuple[dict[tuple[str, str], list[float]], dict[str, list[dict[str, float]]]]:
    a, b = Backend("a").start(), Backend("b").start()
    out: dict[tuple[str, str], list[float]] = {}
    breakdown: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(rounds):
            for kind in kinds:
                for mode in ("dynamic", "reload"):
                    gw = Gateway(mode, kind, [a])
                    seen: list[tuple[float, float]] = []
                    try:
                        with requests.Session() as http:
                            http.trust_env = False
                            for i in range(changes):
                                time.sleep(0.3)  # a reload's old workers leave
                                target = b if i % 2 == 0 else a
                                seen.append(first_served(gw, target, http))
                                out.setdefault((kind, mode), []).append(seen[-1][0])
                    finally:
                        gw.close()
                    if mode == "dynamic":
                        breakdown.setdefault(kind, []).extend(stages(gw.work / "watch.log", seen))
    finally:
        a.stop()
        b.stop()
    return out, breakdown


def churn(changes: int) -> tuple[int, int, int]:
    """(reloads seen by worker PIDs, failed requests, requests) over `changes` changes."""
    bs = [Backend(n).start() for n in "abc"]
    gw = Gateway("dynamic", "file", bs[:1])
    failures, done = [0], [0]
    halt = threading.Event()

    def load() -> None:
        with requests.Session() as http:
            http.trust_env = False
            while not halt.is_set():
                try:
                    ok = http.get(gw.url, timeout=5).status_code == 200
                except requests.RequestException:
                    ok = False
                failures[0] += not ok
                done[0] += 1

    try:
        time.sleep(1)
        before = gw.workers()
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        states: list[list[dict[str, Any]]] = [
            [{"id": "a", "address": bs[0].address}, {"id": "b", "address": bs[1].address}],
            [{"id": b.name, "address": b.address} for b in bs],
            [
                {"id": "b", "address": bs[1].address, "weight": 3},
                {"id": "c", "address": bs[2].address},
            ],
            [
                {"id": "a", "address": bs[0].address},
                {"id": "b", "address": bs[1].address, "state": "draining"},
                {"id": "c", "address": bs[2].address, "weight": 10},
            ],
        ]
        for i in range(changes):
            tmp = gw.work / ".services.tmp"
            tmp.write_text(yaml.safe_dump({"services": {"app": states[i % len(states)]}}))
            os.replace(tmp, gw.work / "services.yaml")
            time.sleep(0.012)
        time.sleep(1)
        halt.set()
        thread.join(10)
        replaced = len(before - gw.workers())
        return (1 if replaced else 0), failures[0], done[0]
    finally:
        gw.close()
        for b in bs:
            b.stop()


@dataclass
class OneChange:
    """Per change (medians, ms): the sidecar's work from the watch event to the push
    leaving, and after nginx confirmed it; what the push and the snapshot carried."""

    before_push: float
    before_push_cpu: float  # the watcher thread's CPU time: what a busy machine cannot inflate
    read: float
    after_confirm: float
    after_push_cpu: float  # CPU from the push leaving to the end (the confirmation polls too)
    confirm: float
    pushed: int
    snapshot_mb: float
    journal_kb: float  # the snapshot's journal at the end (deploy/journal.py)
    rewrites: int  # changes that rewrote the whole snapshot instead of a journal record
    reloads: int
    rss_kb: tuple[int, int]
    full_read: float


def _rss_kb(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _workers(master: int, count: int) -> set[int]:
    """The master's workers once `count` of them have stayed the same for 3 s (a first
    pass that fell back to a reload: its old workers gone, the new ones loaded)."""
    deadline = time.monotonic() + 120
    stable_since, last = time.monotonic(), settled_workers(master)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = settled_workers(master)
        if now != last or len(now) != count:
            stable_since, last = time.monotonic(), now
        elif time.monotonic() - stable_since >= 3:
            break
    return last


def _load(etcd_url: str, services: int) -> None:
    """S services x 10 instances into etcd, 128 puts per transaction (etcd's limit)."""
    puts = []
    for i in range(services):
        for j in range(10):
            address = f"10.0.{i // 250}.{i % 250 + 1}:{8000 + j}"
            puts.append((f"/services/s{i}/s{i}-{j}", json.dumps({"address": address})))
    with requests.Session() as http:
        http.trust_env = False
        for n in range(0, len(puts), 128):
            ops = [
                {"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in puts[n : n + 128]
            ]
            http.post(f"{etcd_url}/v3/kv/txn", json={"success": ops}, timeout=30).raise_for_status()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def one_change(services: int, changes: int, profile: str = "") -> OneChange:
    """One instance reweighted in etcd among `services`, followed by an in-process
    `nginxgen watch` (real etcd watch, real nginx, real push): everything the sidecar
    does between the watch event and the push leaving (the source's catalog update,
    flap damping, guard, policies, plan, structure check, delta, push body), and what it
    does after nginx confirmed (snapshot written atomically, the log line, the gauges)."""
    from nginxgen.deploy import feed
    from nginxgen.registry.errors import RegistryError
    from nginxgen.sources import open_source
    from nginxgen.spec import load_spec
    from nginxgen.watch.loop import Options, Watcher

    work = Path(tempfile.mkdtemp(prefix="nginxgen-10k-"))
    work.chmod(0o755)
    etcd = Etcd(work / "etcd-data").start()
    nginx: subprocess.Popen[bytes] | None = None
    sent: list[float] = []
    sent_cpu: list[float] = []
    original = feed.FeedClient.push
    profiler = cProfile.Profile() if profile else None
    after = cProfile.Profile() if profile else None  # the work after nginx confirmed
    profiling: list[bool] = []  # non-empty once the measured changes begin

    def timed_push(self: Any, document: dict[str, Any]) -> tuple[int, Any]:
        sent.append(time.perf_counter())  # the body is built inside: a few bytes
        sent_cpu.append(time.thread_time())
        if profiler is not None:
            profiler.disable()  # --profile: the work before the push, then after it
        answer = original(self, document)
        if after is not None and sent_cpu and profiling:
            after.enable()  # from here to the end of the apply (confirm polls included)
        return answer

    feed.FeedClient.push = timed_push  # type: ignore[method-assign]
    try:
        _load(etcd.url, services)
        port = free_port()
        spec = {
            "registry": {"kind": "etcd", "url": etcd.url},
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{port}",
                "output": "nginx.conf",
                "pid": "nginx.pid",
                "status_listen": f"127.0.0.1:{free_port()}",
                "worker_processes": 2,
                "endpoints": "dynamic",
            },
            # On a loaded VM the workers may take more than the default 2 s to confirm;
            # a reload instead would end the run (every measured change must be a push).
            "watch": {"listen": "off", "push_confirm_timeout": "10s"},
            "routes": [{"path": f"/s{i}/", "service": f"s{i}"} for i in range(services)],
        }
        config = work / "nginxgen.yaml"
        config.write_text(yaml.safe_dump(spec))
        subprocess.run(
            [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(config),
             "-o", str(work / "nginx.conf")],
            check=True, env=ENV, capture_output=True,
        )  # fmt: skip
        # 10,000 upstreams and their snapshot take a while to load on a busy machine.
        nginx = start(nginx_cmd(work / "nginx.conf"), port, work / "nginx.log", timeout=120)
        watcher = Watcher(config, load_spec(config), Options(listen=False))
        first = watcher.read()
        watcher.apply(first)  # the first pass: the config serves as rendered
        master = int((work / "nginx.pid").read_text())
        before = _workers(master, 2)
        rss_before = _rss_kb(before)
        fresh = open_source(watcher.spec.registry, ())  # its own: the watcher's stays
        full = []
        work_before, reads, work_after, confirms, pushed = [], [], [], [], 0
        cpu_before: list[float] = []
        cpu_after: list[float] = []
        version = first.version
        snapshot_path = Path(watcher.spec.nginx.snapshot_path)
        rewrites = 0
        for n in range(changes):
            inode = snapshot_path.stat().st_ino
            value = json.dumps({"address": "10.0.0.8:8000", "weight": 2 + n % 5})
            etcd.ctl("put", "/services/s7/s7-0", value)
            assert watcher.source.wait(version, 10), "the watch saw the change"
            t0 = time.perf_counter()  # the event is in: everything from here is work
            c0 = time.thread_time()
            if profiler is not None:
                profiler.enable()
                profiling.append(True)
            catalog = watcher.read()
            t_read = time.perf_counter()
            outcome = watcher.apply(catalog)
            t_end, c_end = time.perf_counter(), time.thread_time()
            if after is not None:
                after.disable()
            assert outcome.pushed and outcome.pushed.ok, outcome
            version = catalog.version
            reads.append(t_read - t0)
            work_before.append(sent[-1] - t0)
            cpu_before.append(sent_cpu[-1] - c0)
            cpu_after.append(c_end - sent_cpu[-1])
            confirms.append(outcome.pushed.waited)
            work_after.append(t_end - sent[-1] - outcome.pushed.waited)
            pushed = outcome.pushed.services
            rewrites += snapshot_path.stat().st_ino != inode  # a rename: the whole file
        if profiler is not None and after is not None:
            profiler.dump_stats(profile)
            after.dump_stats(profile + ".after")
        # The comparison: what a full read of the registry costs. After the changes, not
        # between them: the 100,000 objects of each read would be young in the watcher's
        # heap, and the next push's heap settle would walk them. On a loaded machine etcd
        # may not answer a 10,000-service range in time: that read is left out.
        for _ in range(3):
            t1 = time.perf_counter()
            try:
                fresh.read()
            except RegistryError:
                continue
            full.append(time.perf_counter() - t1)
        after = nginx_workers(master)
        snapshot = snapshot_path.stat().st_size
        journal = Path(f"{snapshot_path}.journal")
        journal_size = journal.stat().st_size if journal.exists() else 0
        watcher.source.close()
        fresh.close()
        med = statistics.median
        return OneChange(
            before_push=med(work_before) * 1000,
            before_push_cpu=med(cpu_before) * 1000,
            after_push_cpu=med(cpu_after) * 1000,
            read=med(reads) * 1000,
            after_confirm=med(work_after) * 1000,
            confirm=med(confirms) * 1000,
            pushed=pushed,
            snapshot_mb=snapshot / 1e6,
            journal_kb=journal_size / 1e3,
            rewrites=rewrites,
            reloads=len(before - after),
            rss_kb=(rss_before, _rss_kb(after)),
            full_read=med(full) * 1000 if full else float("nan"),
        )
    finally:
        feed.FeedClient.push = original  # type: ignore[method-assign]
        if nginx is not None:
            stop(nginx)
        etcd.stop()


def throughput(rounds: int, seconds: int) -> tuple[list[float], list[float], list[float]]:
    """requests/s ratio (Lua / stock) and p99 (ms) of each, per interleaved round."""
    work = Path(tempfile.mkdtemp(prefix="nginxgen-thr-"))
    work.chmod(0o755)
    # An nginx backend (return 200): a Python one would be what wrk measures.
    backend_port = free_port()
    backend_proc = start(nginx_cmd(backend_conf(work, (backend_port, free_port()))), backend_port,
                         work / "backend.stderr")  # fmt: skip
    address = f"127.0.0.1:{backend_port}"
    procs: dict[str, Any] = {}
    try:
        for mode in ("dynamic", "reload"):
            d = work / mode
            d.mkdir()
            d.chmod(0o755)
            port = free_port()
            (d / "services.yaml").write_text(
                yaml.safe_dump({"services": {"app": [{"id": "t", "address": address}]}})
            )
            spec = {
                "registry": {"kind": "file", "path": "services.yaml"},
                "nginx": {
                    "flavor": "nginx",
                    "listen": f"127.0.0.1:{port}",
                    "output": "nginx.conf",
                    "pid": "nginx.pid",
                    "status_listen": f"127.0.0.1:{free_port()}",
                    "worker_processes": 1,
                    "endpoints": mode,
                },
                "routes": [{"path": "/", "service": "app"}],
            }
            (d / "nginxgen.yaml").write_text(yaml.safe_dump(spec))
            subprocess.run(
                [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(d / "nginxgen.yaml"),
                 "-o", str(d / "nginx.conf")],
                check=True, env=ENV, capture_output=True,
            )  # fmt: skip
            procs[mode] = (start(nginx_cmd(d / "nginx.conf"), port, d / "nginx.log"), port)
        ratios, p99_lua, p99_stock = [], [], []
        for _ in range(rounds):
            runs = {}
            for mode in ("dynamic", "reload"):
                runs[mode] = wrk(f"http://127.0.0.1:{procs[mode][1]}/", seconds, 16)
            ratios.append(runs["dynamic"].rps / runs["reload"].rps)
            p99_lua.append(runs["dynamic"].p99_ms)
            p99_stock.append(runs["reload"].p99_ms)
        return ratios, p99_lua, p99_stock
    finally:
        for proc, _ in procs.values():
            stop(proc)
        stop(backend_proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=10, help="per round and gateway")
    parser.add_argument("--registry", choices=("file", "etcd", "both"), default="both")
    parser.add_argument("--churn", type=int, default=1000, help="0: skip")
    parser.add_argument("--services", type=int, default=10_000, help="0: skip")
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run; 0: skip")
    parser.add_argument(
        "--profile",
        default="",
        help="cProfile of part 3: before each push to FILE, after it to FILE.after",
    )
    args = parser.parse_args()

    kinds = ["file", "etcd"] if args.registry == "both" else [args.registry]
    if args.changes:
        lat, breakdown = propagation(args.rounds, args.changes, kinds)
        print(f"registry write -> first request on the new backend ({args.rounds} rounds):")
        for (kind, mode), values in lat.items():
            ms = [v * 1000 for v in values]
            print(
                f"  {kind:5} {mode:8} p50 {statistics.median(ms):6.0f} ms  "
                f"p95 {pct(ms, 0.95):6.0f} ms  ({len(ms)} changes)"
            )
        print("  dynamic, per stage (ms, p50/p95; confirm and snapshot come after 'served'):")
        for kind, rows in breakdown.items():
            cells = [
                f"{k} {statistics.median(v):.1f}/{pct(v, 0.95):.1f}"
                for k in STAGES
                if (v := [r[k] for r in rows if k in r])
            ]
            print(f"    {kind:5} " + "  ".join(cells))
        print("  dynamic, the three slowest changes (ms):")
        for kind, rows in breakdown.items():
            for r in sorted(rows, key=lambda r: -r["total"])[:3]:
                parts = "  ".join(f"{k} {r[k]:.1f}" for k in STAGES if k in r)
                print(f"    {kind:5} total {r['total']:.0f}: {parts}")
    if args.churn:
        reloads, failed, total = churn(args.churn)
        print(f"{args.churn} endpoint-only changes under load: {reloads} reloads (worker PIDs), "
              f"{failed} failed of {total} requests")  # fmt: skip
    if args.services:
        one = one_change(args.services, args.changes or 10, args.profile)
        print(
            f"one change among {args.services} services x 10 (etcd watch, in-process watch, "
            f"real nginx; medians of {args.changes or 10}):"
        )
        print(
            f"  sidecar work, watch event -> push leaving: {one.before_push_cpu:.1f} ms CPU, "
            f"{one.before_push:.1f} ms wall (of which the catalog update from etcd "
            f"{one.read:.1f} ms; a full etcd read instead: {one.full_read:.0f} ms)"
        )
        print(
            f"  nginx confirming the push: {one.confirm:.1f} ms (waiting, not work); after it: "
            f"{one.after_confirm:.1f} ms wall (the push persisted: snapshot "
            f"{one.snapshot_mb:.1f} MB rewritten {one.rewrites} times, journal "
            f"{one.journal_kb:.1f} kB at the end; log line, gauges, heap settled); "
            f"{one.after_push_cpu:.1f} ms CPU from the push leaving to the end"
        )
        rss = f"{one.rss_kb[0] / 1024:.0f} -> {one.rss_kb[1] / 1024:.0f} MB"
        print(f"  push of {one.pushed} service(s); {one.reloads} reloads (worker PIDs); "
              f"nginx workers' RSS {rss}")  # fmt: skip
    if args.seconds:
        ratios, lua, stock = throughput(args.rounds, args.seconds)
        shown = ", ".join(f"{r:.0%}" for r in ratios)
        print(f"throughput, Lua balancer / stock upstream ({args.rounds} rounds, keepalive 32): "
              f"median {statistics.median(ratios):.0%} (rounds {shown}); "
              f"p99 {statistics.median(lua):.2f} vs {statistics.median(stock):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
