"""The whole restart loop, timed: from "the application hangs" to "the restarted unit
serves again", with real etcd, real nginx under `nginxgen watch`, and agents.

    PYTHONPATH=. python benchmarks/recovery_loop.py [--rounds 3] [--endpoints both]

Two services, each two agent-wrapped units (tests/integration/test_restart_loop's
HANGING_UNIT) under continuous client load through nginx: `fast` probes every 0.2 s and
falls after 2 failures, `slow` every 1 s after 3 (the defaults' shape, shorter). Each
round starts a fresh gateway per `nginx.endpoints` mode (dynamic, then reload: interleaved
rounds), hangs unit a of each service in turn with GET /hang, then times each part from
outside and from the agent's /status:

  detection      hang → nginx no longer serves a (probes failed; dynamic: the push the
                 worker serves, read from the feed's status; reload: nginx.conf without a)
  call           hang → the agent accepted POST /restart (requested_at)
  deregistered   the call → the registry no longer lists a (the agent's read)
  restart        deregistered → the program started again (grace 0.5 s + stop + start)
  health         started → the agent's TCP check passed
  registered     healthy → registered again with a new registered_at
  first request  registered → the first client request reaches the new program
  total          hang → that first request
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processes import Watched, watched_nginx  # noqa: E402

from nginxgen.model.names import FEED_STATUS_PATH  # noqa: E402
from tests.helpers import (  # noqa: E402
    REPO,
    Etcd,
    free_port,
    wait_for_port,
    world_readable_dir,  # noqa: E402
)
from tests.helpers.agent import AgentProcess, Control, token_file  # noqa: E402
from tests.integration.test_restart_loop import HANGING_UNIT, at  # noqa: E402

PROBES = {
    "fast": {"interval": "0.2s", "timeout": "0.3s", "fall": 2, "rise": 1},
    "slow": {"interval": "1s", "timeout": "0.5s", "fall": 3, "rise": 1},
}
MODES = ("dynamic", "reload")
PARTS = ("detection", "call", "deregistered", "restart", "health", "registered", "first request")
GRACE = 0.5

T = TypeVar("T")


class Unit:
    def __init__(self, work: Path, service: str, name: str) -> None:
        self.service, self.name = service, name
        self.port, self.control_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.requests = work / f"{service}-{name}.requests"
        self.control = Control(self.control_port)
        self.agent: AgentProcess | None = None

    def start(self, work: Path, spec: Path, token: Path) -> None:
        self.agent = AgentProcess(
            [
                *("-c", str(spec), "--service", self.service, "--id", self.name),
                *("--address", self.address, "--ttl", "3s", "--health-kind", "tcp"),
                *("--health-interval", "0.2s", "--wait-healthy", "--stop-timeout", "2s"),
                *("--control-listen", f"127.0.0.1:{self.control_port}"),
                *("--control-token-file", str(token), "--restart-grace", f"{GRACE}s"),
                # --drain: the shutdown's wait (after the round, the gateway gone), not
                # the restart's, which is --restart-grace.
                *("--restart-limit", "100/10m", "--drain", "0s", "--"),
                *(sys.executable, str(work / "unit.py"), self.name, str(self.port)),
                str(self.requests),
            ],
            work / f"agent-{self.service}-{self.name}.log",
        )

    def first_arrival(self, pid: int, after: float) -> float | None:
        if not self.requests.is_file():
            return None
        for line in self.requests.read_text().splitlines():
            t, p = line.split()
            if int(p) == pid and float(t) >= after:
                return float(t)
        return None


def conf_servers(conf: str, service: str) -> set[str]:
    """The server lines of `service`'s upstream in nginx.conf (endpoints: reload)."""
    block = re.search(rf"upstream {service} \{{(.*?)\}}", conf, re.S)
    return set(re.findall(r"server (127\.0\.0\.1:\d+)[ ;]", block.group(1))) if block else set()


def poll(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.005) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise RuntimeError(f"timed out waiting for {what}")


def load(url: str, halt: threading.Event, failures: list[str]) -> None:
    with requests.Session() as http:
        http.trust_env = False
        while not halt.is_set():
            try:
                r = http.get(url, headers={"Connection": "close"}, timeout=10)
                if r.status_code != 200:
                    failures.append(f"{url}: HTTP {r.status_code}")
            except requests.RequestException as exc:
                failures.append(f"{url}: {type(exc).__name__}")


class World:
    """A real etcd, two agent-wrapped units per service, nginx (one worker) under
    `nginxgen watch` with `nginx.endpoints: mode`, and client load on every route."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.work = work = world_readable_dir("nginxgen-bench-")
        self.etcd = Etcd(work / "etcd-data").start()
        (work / "unit.py").write_text(HANGING_UNIT)
        (work / "gw").mkdir()
        token = token_file(work / "gw")
        self.port, health = free_port(), free_port()
        nginx = watched_nginx(self.port, worker_processes=1, endpoints=mode)
        spec = {
            "registry": {"kind": "etcd", "url": self.etcd.url},
            "nginx": nginx,
            # Flap damping off: it would pin a unit restarted every few seconds out of its
            # upstream (rightly, in production); the rounds here restart it on purpose.
            "watch": {
                "listen": f"127.0.0.1:{health}",
                "debounce": {"min": "100ms", "max": "1s"},
                "flap": "off",
            },
            "defaults": {
                "warmup": {"step_percent": 50, "period": "2s"},
                "timeouts": {"connect": "1s", "read": "1s"},
                "failover": {"on": ["error", "timeout"], "tries": 2},
            },
            "services": {
                name: {
                    "probe": {
                        **probe,
                        "path": "/healthz",
                        "recovery": {
                            "after": probe["fall"],
                            "agent": True,
                            "token_file": str(token),
                        },
                    }
                }
                for name, probe in PROBES.items()
            },
            "routes": [{"path": f"/{name}", "service": name} for name in PROBES],
        }
        path = work / "nginxgen.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.units = {name: (Unit(work, name, "a"), Unit(work, name, "b")) for name in PROBES}
        self.gw: Watched | None = None
        self.halt = threading.Event()
        self.failures: list[str] = []
        self.loads: list[threading.Thread] = []
        self.http = requests.Session()
        self.http.trust_env = False
        try:
            for a, b in self.units.values():
                a.start(work, path, token)
                b.start(work, path, token)
            env = {"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            self.gw = Watched(path, self.port, env)
            wait_for_port(health, 30)
            self.feed = f"http://{nginx['status_listen']}{FEED_STATUS_PATH}"
            if mode == "dynamic":  # the feed's token, which `watch --once` created
                feed_token = (work / "nginxgen-endpoints.token").read_text().strip()
                self.http.headers["Authorization"] = f"Bearer {feed_token}"
            for name, pair in self.units.items():
                both = {pair[0].address, pair[1].address}
                poll(lambda n=name, w=both: self.serving(n) == w, 60, f"{name} served")
            time.sleep(3)  # past the first warm-up
            self.loads = [
                threading.Thread(
                    target=load,
                    args=(f"http://127.0.0.1:{self.port}/{n}", self.halt, self.failures),
                )
                for n in PROBES
            ]
            for t in self.loads:
                t.start()
        except BaseException:
            self.close()
            raise

    def serving(self, service: str) -> set[str]:
        """The addresses nginx serves `service` from: in dynamic mode the peers its worker
        serves (nginx.conf holds only a placeholder there), as the feed's status answers;
        in reload mode the server lines of nginx.conf."""
        if self.mode == "reload":
            return conf_servers((self.work / "nginx.conf").read_text(), service)
        r = self.http.get(self.feed, params={"service": service}, timeout=5)
        r.raise_for_status()
        return {
            f"{p['host']}:{p['port']}"
            for p in r.json()["peers"]
            if p.get("state", "up") == "up" and p.get("weight", 1) > 0
        }

    def one_round(self, unit: Unit) -> dict[str, float]:
        status = unit.control.status()
        old_pid, last = status["pid"], status["last_restart"]
        poll(lambda: unit.address in self.serving(unit.service), 30, "a in")
        hung = time.time()
        requests.get(f"http://{unit.address}/hang", timeout=5)
        out = poll(
            lambda: unit.address not in self.serving(unit.service) and time.time(),
            60,
            "a out of the upstream",
        )

        def finished() -> dict[str, Any] | None:
            s = unit.control.status()
            done = s["last_restart"]
            return s if done and done != last and s["restart"] is None else None

        status = poll(finished, 60, "the restart", every=0.05)
        done = status["last_restart"]
        if done["result"] != "ok":
            raise RuntimeError(f"restart {done['result']}: {done['reason']}")
        steps = {s["step"]: at(s["at"]) for s in done["steps"]}
        first = poll(lambda: unit.first_arrival(status["pid"], hung), 60, "a first request")
        assert status["pid"] != old_pid
        asked = at(done["requested_at"])
        return {
            "detection": out - hung,
            "call": asked - hung,
            "deregistered": steps["unlisted"] - asked,
            "restart": steps["started"] - steps["unlisted"],
            "health": steps["healthy"] - steps["started"],
            "registered": steps["registered"] - steps["healthy"],
            "first request": first - steps["registered"],
            "total": first - hung,
        }

    def close(self) -> None:
        self.halt.set()
        for t in self.loads:
            t.join(15)
        if self.gw is not None:
            self.gw.stop()  # the watcher, then nginx: the agents' shutdown needs neither
        agents = [u.agent for pair in self.units.values() for u in pair if u.agent is not None]
        for agent in agents:
            agent.signal(signal.SIGTERM)
        for agent in agents:
            agent.wait(30)
        self.http.close()
        self.etcd.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="restarts per service and mode")
    parser.add_argument("--endpoints", choices=(*MODES, "both"), default="both")
    args = parser.parse_args()
    modes = MODES if args.endpoints == "both" else (args.endpoints,)

    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    failures: dict[str, list[str]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:  # interleaved: a fresh gateway per mode and round
            world = World(mode)
            try:
                for name, (a, _) in world.units.items():  # fast, then slow
                    results.setdefault((name, mode), []).append(world.one_round(a))
                    time.sleep(3)  # a past its ramp again, off the next round's clock
            finally:
                world.close()
            failures[mode] += world.failures

    columns = [(name, mode) for name in PROBES for mode in modes]
    print(f"restart loop, {args.rounds} rounds per probe setting, medians (worst) in seconds")
    probe = {n: f"{n} {PROBES[n]['interval']}×{PROBES[n]['fall']}" for n in PROBES}
    print(f"{'':16}" + "".join(f"{probe[n]:>16}" for n, _ in columns))
    print(f"{'':16}" + "".join(f"{m:>16}" for _, m in columns))
    for part in (*PARTS, "total"):
        cells = []
        for column in columns:
            values = [r[part] for r in results[column]]
            cells.append(f"{statistics.median(values):.2f} ({max(values):5.2f})")
        print(f"{part:16}" + "".join(f"{c:>16}" for c in cells))
    for mode in modes:
        failed = failures[mode]
        shown = f" ({failed[:3]})" if failed else ""
        print(f"client requests failed, {mode}: {len(failed)}{shown}")


if __name__ == "__main__":
    main()
