"""Render, verify and `nginx -t` one large gateway; print the times and their ratio.

    python benchmarks/render_scale.py [--services 10000] [--instances 10]

Goal (issue 2): (render + verify) / nginx -t <= 2.0.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from nginxgen.catalog import Catalog, CatalogBuilder
from nginxgen.nginx_bin import Binary
from nginxgen.pipeline import ensure_runtime_dirs
from nginxgen.plan import make_plan
from nginxgen.render import render, render_upstream
from nginxgen.spec import Spec, parse_spec
from nginxgen.verify import nginx_test, verify


def make_inputs(tmp: Path, services: int, instances: int) -> tuple[Spec, Catalog]:
    routes = "\n".join(f"  - {{path: /s{i}/, service: svc-{i}}}" for i in range(services))
    spec = parse_spec(
        f"registry: {{kind: file, path: s.yaml}}\nnginx: {{listen: 8080}}\nroutes:\n{routes}\n",
        tmp / "nginxgen.yaml",
    )
    b = CatalogBuilder("bench")
    for i in range(services):
        for j in range(instances):
            n = i * instances + j
            b.add(f"svc-{i}", id=f"i{j}", address=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}:80")
    return spec, b.build()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--instances", type=int, default=10)
    args = ap.parse_args()
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    tmp = Path(tempfile.mkdtemp(prefix="nginxgen-bench-"))
    try:
        spec, catalog = make_inputs(tmp, args.services, args.instances)
        ensure_runtime_dirs(spec)

        t0 = time.perf_counter()
        plan = make_plan(spec, catalog)
        text = render(plan, spec.nginx)
        t_render = time.perf_counter() - t0

        t0 = time.perf_counter()
        verdict = verify(text, plan)
        t_verify = time.perf_counter() - t0
        assert verdict.ok, verdict.findings[:5]

        t_nginx = float("nan")
        if nginx:
            t0 = time.perf_counter()
            problems = nginx_test(text, Binary(nginx, "nginx"))
            t_nginx = time.perf_counter() - t0
            assert not problems, problems[:5]

        render_upstream.cache_clear()
        lines = text.count("\n")
        print(f"{args.services} services x {args.instances} instances: {lines} lines")
        print(f"{'step':<22}{'seconds':>10}")
        print(f"{'render (plan+jinja)':<22}{t_render:>10.2f}")
        print(f"{'verify (crossplane)':<22}{t_verify:>10.2f}")
        print(f"{'nginx -t':<22}{t_nginx:>10.2f}")
        ratio = (t_render + t_verify) / t_nginx
        print(f"(render+verify)/nginx -t = {ratio:.2f}  (goal <= 2.0)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
