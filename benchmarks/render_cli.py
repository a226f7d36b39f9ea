"""`nginxgen render` on a large file registry, as a user runs it: before and after the fast lexer.

    PYTHONPATH=. python benchmarks/render_cli.py [--services 5000] [--instances 3] [--rounds 5]

Each round runs the real CLI in a fresh interpreter twice, interleaved: "before" puts
crossplane's own per-character lexer back (what every render used until
nginxgen/verify/lex.py), "after" is the command as shipped. Both read the same spec and
registry, render to a file with `--no-nginx-test` (nginx -t is the same for both; add
--nginx-test to include it) and must print the same config. Medians of wall time.

Measured on the 2-core test machine (shared, loaded), 5,000 services x 3 instances,
5 rounds: see docs/commands.md#speed for the numbers and how they were taken.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BEFORE = (
    "import crossplane.lexer as l, nginxgen.verify.parse as p; p._parser.lex = l.lex; "
    "from nginxgen.cli import main; sys.argv[0] = 'nginxgen'; main()"
)
AFTER = "from nginxgen.cli import main; sys.argv[0] = 'nginxgen'; main()"


def write_inputs(directory: Path, services: int, instances: int) -> Path:
    spec = directory / "nginxgen.yaml"
    with open(spec, "w") as f:
        f.write("registry: {kind: file, path: services.yaml}\n")
        f.write("nginx: {listen: 8080, output: out/nginx.conf}\nroutes:\n")
        for i in range(services):
            f.write(f"  - {{path: /s{i}/, service: svc-{i}}}\n")
    with open(directory / "services.yaml", "w") as f:
        f.write("services:\n")
        for i in range(services):
            f.write(f"  svc-{i}:\n")
            for j in range(instances):
                f.write(f"    - {{id: i{j}, address: 10.{i // 250}.{i % 250}.{j + 1}:8080}}\n")
    (directory / "out").mkdir()
    return spec


def run(code: str, spec: Path, out: Path, nginx_test: bool) -> float:
    flag = "--nginx-test" if nginx_test else "--no-nginx-test"
    cmd = [sys.executable, "-c", f"import sys; {code}", "render", "-c", str(spec), flag]
    started = time.perf_counter()
    done = subprocess.run([*cmd, "-o", str(out)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"render failed: {done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nginx-test", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_inputs(Path(tmp), args.services, args.instances)
        times: dict[str, list[float]] = {"before": [], "after": []}
        texts = {}
        for _ in range(args.rounds):
            for name, code in (("before", BEFORE), ("after", AFTER)):
                out = Path(tmp) / "out" / f"{name}.conf"
                times[name].append(run(code, spec, out, args.nginx_test))
                texts[name] = out.read_text()
        assert texts["before"] == texts["after"], "the two renders differ"
    before, after = (statistics.median(times[k]) for k in ("before", "after"))
    print(f"{args.services} services x {args.instances}, {args.rounds} rounds (medians, wall):")
    print(f"  before (crossplane's lexer): {before:.2f} s  {times['before']}")
    print(f"  after  (verify/lex.py):      {after:.2f} s  {times['after']}")
    print(f"  speed-up: {before / after:.2f}x")


if __name__ == "__main__":
    main()
