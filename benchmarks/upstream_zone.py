"""What one server costs in an upstream's shared-memory zone, measured with `nginx -t`.

    PYTHONPATH=. python benchmarks/upstream_zone.py [--servers 1 60 500 5000] [--name HOST]

For each server count, bisects the smallest `zone` size that `nginx -t` accepts (it sets
up the zones), for IPv4 and IPv6 addresses (and for `--name HOST`, a name your resolver
knows, to see what long names cost), then prints the cost per server between the
smallest and the largest count, and the zone nginxgen plans for each count next to it.
Deterministic: one run is the answer. plan.ZONE_PER_SERVER comes from this.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nginxgen.deploy.nginx_bin import find_binary  # noqa: E402
from nginxgen.plan.service import ZONE_HEADROOM, zone_size  # noqa: E402
from nginxgen.spec import NginxSpec  # noqa: E402

KIB = 1024


def ipv4(i: int) -> str:
    return f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:65535"


def ipv6(i: int) -> str:
    return f"[2001:db8:ffff:ffff:ffff:ffff:{i // 65536:x}:{i % 65536:x}]:65535"


def config(work: Path, servers: int, zone_kib: int, address: Callable[[int], str]) -> str:
    lines = "\n".join(
        f"    server {address(i)} weight=1000 max_fails=3 fail_timeout=10s;" for i in range(servers)
    )
    temp = " ".join(
        f"{d}_temp_path {work}/tmp;" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"pid {work}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  {temp}\n"
        f"  upstream u {{\n    zone u {zone_kib}k;\n{lines}\n    keepalive 32;\n  }}\n"
        "  server { listen 127.0.0.1:1; location / { proxy_pass http://u; } }\n}\n"
    )


def accepted(binary: str, work: Path, conf: str) -> bool:
    path = work / "nginx.conf"
    path.write_text(conf)
    r = subprocess.run([binary, "-t", "-q", "-p", str(work), "-c", str(path)],
                       capture_output=True, text=True, check=False)  # fmt: skip
    if r.returncode and "no memory" not in r.stderr and "too small" not in r.stderr:
        raise SystemExit(f"nginx -t failed for another reason:\n{r.stderr}")
    return r.returncode == 0


def smallest_zone_kib(binary: str, work: Path, servers: int, address: Callable[[int], str]) -> int:
    low, high = 8, 64  # nginx refuses zones under 8 pages
    while not accepted(binary, work, config(work, servers, high, address)):
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if accepted(binary, work, config(work, servers, mid, address)):
            high = mid
        else:
            low = mid
    return high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 60, 65, 500, 1000, 5000])
    parser.add_argument("--name", help="a resolvable host name to measure names with")
    args = parser.parse_args()
    binary = find_binary(NginxSpec(flavor="nginx"))
    if binary is None:
        raise SystemExit("no nginx binary found")
    version = subprocess.run([binary.path, "-v"], capture_output=True, text=True).stderr.strip()
    kinds: dict[str, Callable[[int], str]] = {"ipv4": ipv4, "ipv6": ipv6}
    if args.name:
        kinds[f"name ({len(args.name)} chars)"] = lambda i: f"{args.name}:65535"
    counts = sorted(args.servers)
    print(f"{version}; smallest zone nginx -t accepts, and what nginxgen plans (64k minimum)")
    print(f"{'servers':>8} " + " ".join(f"{k:>18}" for k in kinds) + f" {'planned':>10}")
    measured: dict[str, dict[int, int]] = {k: {} for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "tmp").mkdir()
        for n in counts:
            row = []
            for kind, address in kinds.items():
                kib = measured[kind][n] = smallest_zone_kib(binary.path, work, n, address)
                row.append(f"{kib:>17}k")
            planned = zone_size(64 * KIB, n) // KIB
            print(f"{n:>8} " + " ".join(row) + f" {planned:>9}k")
    lo, hi = counts[0], counts[-1]
    if hi > lo:
        print(f"\ncost per server between {lo} and {hi} servers:")
        for kind in kinds:
            per = (measured[kind][hi] - measured[kind][lo]) * KIB / (hi - lo)
            print(f"  {kind:>18}: {per:6.0f} bytes")
    print(f"planned zones hold {ZONE_HEADROOM}x the servers at the worst measured cost")


if __name__ == "__main__":
    main()
