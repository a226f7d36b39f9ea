"""The provider side of the restart loop, timed with a real etcd and a real agent.

    PYTHONPATH=. python benchmarks/restart_loop.py [--runs 5] [--grace 0.5] [--ready 0]

One agent wraps a small HTTP unit (tests/helpers/agent.UNIT, /healthz 200 once it listens,
plus `--ready` seconds) and is restarted `--runs` times through POST /restart. Each part
is seen from outside, by sampling every 5 ms: etcd no longer holds the key, the program's
port is closed and its process group gone, the port is open again, etcd holds the key
again (a new lease). The agent's own /status times (healthy, registered) are printed
beside them, so the two views can be compared in the same run.

The whole loop with the gateway's half (detection of a hung unit, the call, the first
request served after the return) is benchmarks/recovery_loop.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Etcd, free_port  # noqa: E402
from tests.helpers.agent import (  # noqa: E402
    AgentProcess,
    Control,
    Timeline,
    eventually,
    group_members,
    port_open,
    token_file,
    unit_command,
)

KEY = "/services/app/app-1"
PARTS = (
    ("POST /restart → deregistered (etcd)", None, "unlisted"),
    ("deregistered → program stopped (grace + stop)", "unlisted", "stopped"),
    ("program stopped → started (port open)", "stopped", "started"),
    ("started → registered again (etcd)", "started", "registered"),
    ("POST /restart → registered again (etcd)", None, "registered"),
)


def one_restart(etcd: Etcd, control: Control, port: int) -> tuple[dict[str, float], dict]:
    _, lease = etcd.get(KEY)
    pid = control.status()["pid"]

    def back(seen: dict[str, float]) -> bool:
        # A new lease: registered_at has whole seconds, two restarts may share one.
        value, new_lease = etcd.get(KEY)
        return "started" in seen and value is not None and new_lease != lease

    timeline = Timeline(
        {
            "unlisted": lambda seen: etcd.get(KEY)[0] is None,
            "stopped": lambda seen: (
                "unlisted" in seen and not port_open(port) and not group_members(pid)
            ),
            "started": lambda seen: "stopped" in seen and port_open(port),
            "registered": back,
        }
    )
    answer = control.restart()
    if answer.status_code != 202:
        raise SystemExit(f"restart refused: {answer.status_code} {answer.text}")
    timeline.wait("registered", 120)
    seen = timeline.stop()
    steps = control.finished()["last_restart"]
    if steps["result"] != "ok":
        raise SystemExit(f"restart ended {steps['result']}: {steps['reason']}")
    return seen, {s["step"]: s["after_seconds"] for s in steps["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--grace", type=float, default=0.5)
    ap.add_argument("--ready", type=float, default=0.0, help="extra seconds until /healthz 200")
    opts = ap.parse_args()
    outside: dict[str, list[float]] = {name: [] for name, _, _ in PARTS}
    inside: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="nginxgen-restart-bench-") as name:
        tmp = Path(name)
        etcd = Etcd(tmp / "etcd-data").start()
        spec = tmp / "nginxgen.yaml"
        registry, routes = {"kind": "etcd", "url": etcd.url}, [{"path": "/", "service": "app"}]
        spec.write_text(yaml.safe_dump({"registry": registry, "routes": routes}))
        port, control_port = free_port(), free_port()
        agent = AgentProcess(
            [
                "-c", str(spec), "--service", "app", "--id", "app-1",
                "--address", f"127.0.0.1:{port}", "--ttl", "3s", "--wait-healthy",
                "--health-url", f"http://127.0.0.1:{port}/healthz",
                "--health-interval", "0.1s", "--stop-timeout", "5s",
                "--control-listen", f"127.0.0.1:{control_port}",
                "--control-token-file", str(token_file(tmp)),
                "--restart-grace", f"{opts.grace:g}s", "--restart-limit", "1000/1m",
                "--", *unit_command(tmp, port, opts.ready),
            ],
            tmp / "agent.log",
        )  # fmt: skip
        try:
            control = Control(control_port)
            eventually(lambda: etcd.get(KEY)[0], 60, "the registration", agent)
            for _ in range(opts.runs):
                seen, steps = one_restart(etcd, control, port)
                for part, start, end in PARTS:
                    outside[part].append(seen[end] - (seen[start] if start else 0.0))
                for step, after in steps.items():
                    inside.setdefault(step, []).append(after)
        finally:
            agent.stop()
            etcd.stop()

    width = max(map(len, [*outside, *inside])) + 2
    print(f"restart loop, provider side: {opts.runs} restarts, grace {opts.grace:g}s, real etcd")
    print(f"\nseen from outside (sampled every 5 ms){'':<{width - 38}}  median    worst")
    for part, values in outside.items():
        print(f"  {part:<{width - 2}}  {statistics.median(values):5.2f}s  {max(values):6.2f}s")
    print(f"\nthe agent's own steps, from the request{'':<{width - 39}}  median    worst")
    for step, values in inside.items():
        print(f"  {step:<{width - 2}}  {statistics.median(values):5.2f}s  {max(values):6.2f}s")


if __name__ == "__main__":
    main()
