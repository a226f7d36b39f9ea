"""Lint a 10,000-upstream config as nginxgen renders it; compare with a bare crossplane parse.

    PYTHONPATH=. python benchmarks/lint_scale.py [--services 10000] [--repeat 5] [--gixy]

Prints the best of --repeat runs for: crossplane.parse alone (defaults: context and
argument checks on, no comments), `lint_file` (parse with comments + every rule +
suppressions + source lines), and their ratio. The goal is lint <= 1.5x the parse.
Then the same services split over 4 files, linted serially and in parallel.
gixy-next (--security) and nginx -t are not part of the timing; --gixy times gixy once.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import crossplane

from nginxgen.lint import Options, lint_file, lint_paths
from nginxgen.lint.external import gixy_available, gixy_findings
from nginxgen.model.validate import CatalogBuilder
from nginxgen.plan import make_plan
from nginxgen.render import render
from nginxgen.spec import parse_spec


def rendered_config(services: int, directory: Path) -> Path:
    """nginxgen's own output for `services` services, 3 instances each, one route each."""
    routes = "\n".join(f"  - {{path: /svc/s{i}/, service: s{i}}}" for i in range(services))
    spec = parse_spec(
        "registry: {kind: file, path: services.yaml}\n"
        "nginx: {listen: 127.0.0.1:8080, flavor: nginx}\n"
        f"routes:\n{routes}\n",
        directory / "nginxgen.yaml",
    )
    builder = CatalogBuilder("benchmark")
    for i in range(services):
        for j in range(3):
            builder.add(f"s{i}", id=f"s{i}-{j}", address=f"10.{i // 250}.{i % 250}.{j + 1}:8080")
    plan = make_plan(spec, builder.build(), datetime.now(timezone.utc))
    path = directory / "nginx.conf"
    path.write_text(render(plan, spec.nginx))
    return path


def parse_gc_paused(path: str) -> object:
    gc.disable()
    try:
        return crossplane.parse(path)
    finally:
        gc.enable()


def best_of(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Best time of each, runs interleaved so a busy machine slows both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, seen in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            seen.append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gixy", action="store_true", help="also time gixy-next once (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        conf = rendered_config(args.services, Path(tmp))
        text = conf.read_text()
        result, _ = lint_file(str(conf), Options())
        assert not result.findings, result.findings[:5]  # nginxgen's output lints clean

        parse, lint, parse_no_gc = best_of(
            [
                lambda: crossplane.parse(str(conf)),
                lambda: lint_file(str(conf), Options()),
                lambda: parse_gc_paused(str(conf)),
            ],
            args.repeat,
        )
        print(
            f"config: {args.services} upstreams, {text.count('server 10.')} servers, "
            f"{text.count('location ')} locations, {len(text.splitlines())} lines, "
            f"{len(text) / 1e6:.1f} MB"
        )
        print(f"crossplane.parse      {parse:7.2f} s")
        print(f"nginxgen lint         {lint:7.2f} s")
        print(f"ratio lint / parse    {lint / parse:7.2f}x  (goal <= 1.5x)")
        # lint pauses the cycle collector while parsing; this is the parse with that alone.
        ratio_no_gc = lint / parse_no_gc
        print(f"parse, gc paused      {parse_no_gc:7.2f} s  (lint is {ratio_no_gc:.2f}x this)")
        parts = []
        for k in range(4):
            part = Path(tmp) / f"part{k}"
            part.mkdir()
            parts.append(str(rendered_config(args.services // 4, part)))
        serial, parallel = best_of(
            [
                lambda: lint_paths(parts, Options(), jobs=1),
                lambda: lint_paths(parts, Options()),  # workers: one per CPU when it pays
            ],
            max(1, args.repeat // 2),
        )
        print(f"4 files, serial       {serial:7.2f} s")
        print(f"4 files, parallel     {parallel:7.2f} s  ({os.cpu_count()} CPUs)")
        if args.gixy and gixy_available():
            start = time.perf_counter()
            gixy_findings(str(conf), {})
            print(f"gixy-next (extra)     {time.perf_counter() - start:7.2f} s  (once)")


if __name__ == "__main__":
    main()
