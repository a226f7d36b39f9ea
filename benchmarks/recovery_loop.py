"""The whole restart loop, timed: from "the application hangs" to "the restarted unit
serves again", with real etcd, real nginx under `nginxgen watch`, and agents.

    PYTHONPATH=. python benchmarks/recovery_loop.py [--rounds 3]

Two services, each two agent-wrapped units (tests/integration/test_restart_loop's
HANGING_UNIT) under continuous client load through nginx: `fast` probes every 0.2 s and
falls after 2 failures, `slow` every 1 s after 3 (the defaults' shape, shorter). Rounds
alternate between them: hang unit a with GET /hang, then time each part from outside
and from the agent's /status:

  detection      hang → nginx.conf no longer lists a (probes failed, reload served)
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
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processes import Watched, watched_nginx  # noqa: E402

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
PARTS = ("detection", "call", "deregistered", "restart", "health", "registered", "first request")
GRACE = 0.5


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
                *("--restart-limit", "100/10m", "--"),
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


def upstream_servers(conf: str, service: str) -> set[str]:
    block = re.search(rf"upstream {service} \{{(.*?)\}}", conf, re.S)
    return set(re.findall(r"server (127\.0\.0\.1:\d+) ", block.group(1))) if block else set()


def poll(check, timeout: float, what: str, every: float = 0.005):
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


def one_round(work: Path, conf: Path, unit: Unit) -> dict[str, float]:
    status = unit.control.status()
    old_pid, last = status["pid"], status["last_restart"]
    poll(lambda: unit.address in upstream_servers(conf.read_text(), unit.service), 30, "a in")
    hung = time.time()
    requests.get(f"http://{unit.address}/hang", timeout=5)
    out = poll(
        lambda: (
            unit.address not in upstream_servers(conf.read_text(), unit.service) and time.time()
        ),
        60,
        "a out of the upstream",
    )

    def finished():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="restarts per service")
    args = parser.parse_args()

    work = world_readable_dir("nginxgen-bench-")
    etcd = Etcd(work / "etcd-data").start()
    (work / "unit.py").write_text(HANGING_UNIT)
    (work / "gw").mkdir()
    token = token_file(work / "gw")
    port, health = free_port(), free_port()
    spec = {
        "registry": {"kind": "etcd", "url": etcd.url},
        "nginx": watched_nginx(port, worker_processes=1),
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
                    "recovery": {"after": probe["fall"], "agent": True, "token_file": str(token)},
                }
            }
            for name, probe in PROBES.items()
        },
        "routes": [{"path": f"/{name}", "service": name} for name in PROBES],
    }
    path = work / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    units = {name: (Unit(work, name, "a"), Unit(work, name, "b")) for name in PROBES}
    for a, b in units.values():
        a.start(work, path, token)
        b.start(work, path, token)
    gw = Watched(path, port, {"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    halt, failures = threading.Event(), []
    results: dict[str, list[dict[str, float]]] = {name: [] for name in PROBES}
    try:
        wait_for_port(health, 30)
        conf = work / "nginx.conf"
        for name, pair in units.items():
            both = {pair[0].address, pair[1].address}
            poll(lambda n=name, w=both: upstream_servers(conf.read_text(), n) == w, 60, name)
        time.sleep(3)  # past the first warm-up
        loads = [
            threading.Thread(target=load, args=(f"http://127.0.0.1:{port}/{n}", halt, failures))
            for n in PROBES
        ]
        for t in loads:
            t.start()
        for _ in range(args.rounds):
            for name, (a, _) in units.items():  # interleaved: fast, slow, fast, slow, ...
                results[name].append(one_round(work, conf, a))
                time.sleep(3)  # a past its ramp again before the next round on it
        halt.set()
        for t in loads:
            t.join(15)
    finally:
        halt.set()
        gw.stop()  # the watcher, then nginx: the agents' shutdown needs neither
        for a, b in units.values():
            for u in (a, b):
                if u.agent is not None:
                    u.agent.signal(signal.SIGTERM)
            for u in (a, b):
                if u.agent is not None:
                    u.agent.wait(30)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"restart loop, {args.rounds} rounds per probe setting, medians (worst) in seconds")
    print(
        f"{'':16}"
        + "".join(
            f"{n + ' ' + PROBES[n]['interval'] + '×' + str(PROBES[n]['fall']):>22}" for n in PROBES
        )
    )
    for part in (*PARTS, "total"):
        cells = []
        for name in PROBES:
            values = [r[part] for r in results[name]]
            cells.append(f"{statistics.median(values):8.2f} ({max(values):5.2f})")
        print(f"{part:16}" + "".join(f"{c:>22}" for c in cells))
    print(f"client requests failed: {len(failures)}" + (f" ({failures[:3]})" if failures else ""))


if __name__ == "__main__":
    main()
