"""Lint time for deeply nested blocks against the same blocks side by side.

    PYTHONPATH=. python benchmarks/lint_nesting.py [--sizes 4000,40000] [--rounds 5]

For each size N: a server with N `location` blocks nested inside one another, and a
server with N sibling `location` blocks (the same directives, depth 1). Rounds are
interleaved (nested, flat, nested, flat, ...) and the medians printed with their ratio
and the time per block: linear nesting means the ratio stays flat as N grows tenfold.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nginxgen.lint import Options, lint_file

HEAD = "events {}\nhttp {\n  server {\n    listen 127.0.0.1:8080;\n"
TAIL = "  }\n}\n"


def nested(n: int) -> str:
    return HEAD + "location / {\n" * n + "return 204;\n" + "}\n" * n + TAIL


def flat(n: int) -> str:
    return HEAD + "".join(f"location /l{i} {{\nreturn 204;\n}}\n" for i in range(n)) + TAIL


def timed(path: Path) -> float:
    start = time.perf_counter()
    result, _ = lint_file(str(path), Options())
    elapsed = time.perf_counter() - start
    assert not result.findings, result.findings[:3]
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4000,40000")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    print(f"{'blocks':>8} {'nested s':>9} {'flat s':>8} {'ratio':>6} {'nested us/block':>16}")
    for n in (int(s) for s in args.sizes.split(",")):
        paths = {"nested": directory / f"nested{n}.conf", "flat": directory / f"flat{n}.conf"}
        paths["nested"].write_text(nested(n))
        paths["flat"].write_text(flat(n))
        times: dict[str, list[float]] = {"nested": [], "flat": []}
        for _ in range(args.rounds):
            for kind, path in paths.items():
                times[kind].append(timed(path))
        a, b = statistics.median(times["nested"]), statistics.median(times["flat"])
        print(f"{n:>8} {a:>9.3f} {b:>8.3f} {a / b:>6.2f} {a / n * 1e6:>16.1f}")


if __name__ == "__main__":
    main()
