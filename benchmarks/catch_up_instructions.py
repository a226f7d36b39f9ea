"""What the endpoint feed's per-request catch-up check costs in instructions: callgrind
counts of one nginx worker over a fixed load on the plain dynamic route, with the check
(`endpoints.catch_up()` in the route's rewrite phase: a read of nginx's cached clock, and
a shared dict get when that clock moved on) and with it taken out of the same Lua tree.
Nothing is pushed during the load: this is the price a request pays for a worker
catching up right after a push instead of at its next tick (docs/endpoints-feed.md).
Under callgrind every request is more than a millisecond apart, so each one pays the
dict get: the upper bound. A worker busier than one request per millisecond pays it once
per millisecond.

    python benchmarks/catch_up_instructions.py [--requests 2000]

Needs valgrind; about a minute per variant (metrics_hook_instructions.py does the same
for the metrics hook).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from gateway_overhead import backend_conf  # noqa: E402
from metrics_hook_instructions import BATCH, instructions, variant  # noqa: E402
from processes import nginx_cmd, render, start, stop  # noqa: E402

from tests.helpers import find_tool, free_port  # noqa: E402

CALL = "    endpoints.catch_up()\n"


def gateway(work: Path, backend: int) -> Path:
    """The plain route through the Lua balancer (endpoints: dynamic), metrics off."""
    (work / "services.yaml").write_text(
        yaml.safe_dump({"services": {"app": [{"id": "a", "address": f"127.0.0.1:{backend}"}]}})
    )
    spec = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": {
            "flavor": "nginx",
            "listen": f"127.0.0.1:{free_port()}",
            "status_listen": f"127.0.0.1:{free_port()}",
            "pid": "gateway.pid",
            "worker_processes": 1,
            "endpoints": "dynamic",
            "metrics": False,
        },
        "routes": [{"path": "/plain/", "service": "app"}],
    }
    (work / "nginxgen.yaml").write_text(yaml.safe_dump(spec))
    conf = render(work / "nginxgen.yaml", work / "gateway.conf")
    if 'endpoints").init' not in conf.read_text():
        raise SystemExit("the rendered config is not in dynamic mode")
    return conf


def without_check(conf: Path, work: Path) -> Path:
    """A copy of `conf` whose Lua tree has the catch-up call taken out of balancer.lua."""
    text = conf.read_text()
    m = re.search(r"lua_package_path ['\"]([^'\"]+)/\?\.lua;;['\"]", text)
    if not m:
        raise SystemExit("the rendered config has no lua_package_path")
    tree = work / "lua-without-check"
    shutil.copytree(m.group(1), tree)
    balancer = tree / "nginxgen" / "balancer.lua"
    code = balancer.read_text()
    if CALL not in code:
        raise SystemExit("balancer.lua has no catch_up() call to take out")
    balancer.write_text(code.replace(CALL, "", 1))
    out = work / "without-check.conf"
    out.write_text(text.replace(m.group(1), str(tree)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = max(BATCH, args.requests // BATCH * BATCH)
    valgrind = find_tool("valgrind")
    if valgrind is None or find_tool("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="nginxgen-callgrind-"))
    work.chmod(0o755)
    backend, auth = free_port(), free_port()
    procs = []
    results: dict[str, float] = {}
    try:
        procs.append(
            start(nginx_cmd(backend_conf(work, backend, auth)), backend, work / "backend.log")
        )
        shipped = gateway(work, backend)
        confs = {"with": shipped, "without": without_check(shipped, work)}
        for _round in range(2):  # interleaved
            for name, conf in confs.items():
                path, port = variant(conf, name, work, None)
                print(f"{name} ...", file=sys.stderr, flush=True)
                count = instructions(valgrind, path, port, n, work, f"{name}{_round}")
                results[name] = min(results.get(name, count), count)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"user-space instructions per request of the gateway worker, /plain/ (dynamic), "
        f"{n} requests, the lower of 2 interleaved runs"
    )
    base = results["without"]
    for name, what in (
        ("without", "no catch-up check"),
        ("with", "catch_up() in the route's rewrite phase (as shipped)"),
    ):
        v = results[name]
        print(f"{name:<8} {v:>8.0f}  {v - base:>+7.0f}  {what}")


if __name__ == "__main__":
    main()
