"""What a request through the Lua balancer costs in instructions, against a stock upstream:
callgrind counts of one nginx worker (user space: nginx, lua-nginx-module, LuaJIT and its
traces, libc) over a fixed load, for one gateway rendered with `nginx.endpoints: reload`
(a stock upstream) and one rendered with `dynamic` (the Lua balancer, its log hook and
whatever the route runs per request), both by nginxgen from the same spec; the dynamic
gateway also serves a split route (issue 15's decision) to the same backends.

Counts do not move with the machine's other load, unlike wrk or CPU time
(dynamic_endpoints.py, split.py); they leave out the kernel, which is the same for both
(the same connections and syscalls).

    python benchmarks/balancer_instructions.py [--requests 2000]

Needs valgrind (apt-get install valgrind); each gateway runs in the foreground with
`master_process off` under callgrind: about a minute each.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from balancer import backend_conf  # noqa: E402
from metrics_hook_instructions import batches, callgrind, measure  # noqa: E402
from processes import nginx_cmd, render, start, stop  # noqa: E402
from split_gateway import split_gateway_spec  # noqa: E402

from tests.helpers import free_port  # noqa: E402

# A session key to hash and a canary cookie no rule matches: the whole decision runs.
HEADER = "Cookie: session=user-4711; canary=no"


def gateway_spec(work: Path, mode: str, backends: tuple[int, int]) -> Path:
    """The gateway in `mode` (nginx.endpoints), rendered in its own folder; dynamic also
    serves the split route."""
    d = work / mode
    d.mkdir()
    d.chmod(0o755)
    rule = {"cookie": "canary", "matches": "^(always|yes)$", "to": "green"}
    rules = [rule] if mode == "dynamic" else None
    spec = split_gateway_spec(d, free_port(), free_port(), backends, rules, endpoints=mode)
    return render(spec, d / "nginx.conf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = batches(args.requests)
    valgrind = callgrind()
    work = Path(tempfile.mkdtemp(prefix="nginxgen-callgrind-"))
    work.chmod(0o755)
    backends = (free_port(), free_port())
    procs = [start(nginx_cmd(backend_conf(work, backends)), backends[0], work / "backend.log")]
    results: dict[str, float] = {}
    try:
        for mode, paths in (("reload", ("/plain/",)), ("dynamic", ("/plain/", "/split/"))):
            spec = gateway_spec(work, mode, backends)
            for route in paths:
                name = f"{mode}{route.replace('/', '-')}"
                label = f"{mode} {route}"
                count = measure(valgrind, spec, name, work, n, route, HEADER, label=label)
                results[f"{mode} {route}"] = count.path  # timer handlers left out
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print(f"user-space instructions per request of the gateway worker, {n} requests each")
    base = results["reload /plain/"]
    for name, what in (
        ("reload /plain/", "stock upstream (nginx.endpoints: reload)"),
        ("dynamic /plain/", "Lua balancer (nginx.endpoints: dynamic)"),
        ("dynamic /split/", "split route: set_by_lua decision + Lua balancer"),
    ):
        v = results[name]
        print(f"{name:<16} {v:>8.0f}  {v - base:>+7.0f}  {what}")
    split = results["dynamic /split/"] - results["dynamic /plain/"]
    print(f"split decision over a plain dynamic route: {split:+.0f} instructions per request")


if __name__ == "__main__":
    main()
