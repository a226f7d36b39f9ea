"""What reading a big file registry costs through nginxgen's one YAML loader.

    PYTHONPATH=. python benchmarks/yaml_load.py [--services 10000] [--rounds 5]

Interleaved rounds, medians, on one generated services.yaml (3 instances per service):
loading it with the C parser (what nginxgen uses when PyYAML has libyaml) against the
pure-Python parser (what yaml.safe_load used before), the alias check that walks the
nodes when a file holds an alias (one shared mapping here), the whole parse_registry, and the
time to refuse a 1 KB alias bomb that would otherwise expand to 387 million nodes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nginxgen.sources.file import parse_registry  # noqa: E402
from nginxgen.util import yaml_load  # noqa: E402


class PureLoader(yaml.SafeLoader):
    """nginxgen's loader on PyYAML's pure-Python parser (yaml.safe_load's)."""


for tag in ("int", "float", "timestamp"):
    name = f"tag:yaml.org,2002:{tag}"
    PureLoader.add_constructor(name, yaml_load.SafeLoader.yaml_constructors[name])


def registry(services: int, alias: bool) -> bytes:
    data = {
        f"svc-{i}": [
            {"id": f"svc-{i}-{j}", "address": f"10.{i // 250 % 256}.{i % 250}.{j + 1}:8080",
             "weight": 10, "registered_at": "2026-11-29T10:00:00Z", "tags": ["v2"],
             "meta": {"zone": "a"}}
            for j in range(3)
        ]
        for i in range(services)
    }  # fmt: skip
    if alias:  # one shared mapping: the dumper writes an anchor and an alias
        data["svc-1"][0]["meta"] = data["svc-0"][0]["meta"]
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump({"services": data}, Dumper=dumper).encode()


def bomb() -> bytes:
    lines = ["x0: &l0 [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"x{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return ("\n".join(lines) + "\nservices: {users: [{id: u, address: '10.0.0.1:80', "
            "tags: *l8}]}\n").encode()  # fmt: skip


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    plain, aliased, boom = registry(args.services, False), registry(args.services, True), bomb()

    def refused() -> None:
        try:
            parse_registry(boom, "bomb.yaml")
        except Exception as exc:  # noqa: BLE001 - printed below
            assert "aliases expand" in str(exc), exc
        else:
            raise AssertionError("the bomb was not refused")

    cases: dict[str, Callable[[], Any]] = {
        "load, C parser": lambda: yaml_load.load_yaml(plain, "services.yaml"),
        "load, C parser + alias check": lambda: yaml_load.load_yaml(aliased, "services.yaml"),
        "load, pure-Python parser": lambda: yaml_load.load_yaml(plain, "s.yaml", PureLoader),
        "parse_registry (C parser)": lambda: parse_registry(plain, "services.yaml"),
        "1 KB alias bomb refused": refused,
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, run in cases.items():  # interleaved: load on the machine hits all alike
            times[name].append(timed(run))
    size = len(plain) / 1e6
    print(f"parse_registry, {args.services:,} services x 3 instances ({size:.1f} MB), "
          f"median of {args.rounds} interleaved rounds (min-max):")  # fmt: skip
    base = statistics.median(times["load, C parser"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<30} {med:8.3f} s  ({min(values):.3f}-{max(values):.3f})"
              f"  {med / base:6.2f}x the C parser's load")  # fmt: skip


if __name__ == "__main__":
    main()
