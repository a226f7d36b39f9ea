"""What the metrics log hook costs in instructions: callgrind counts of one nginx worker
(user space: nginx, lua-nginx-module, LuaJIT and its traces, libc, OpenSSL) over a fixed
load on the plain proxy route (or the cache hit: `--route /hit/`), for the gateway
rendered with metrics off, on, and on without the calls of the metrics hook (what
metrics cost besides counting: the map; in reload mode also what entering an otherwise
empty `log_by_lua_block` costs). Both gateways use the same `endpoints` mode
(`--endpoints`, default dynamic, the default with metrics on): in dynamic mode the log
hooks run the balancer's hook with metrics on and off.

Counts do not move with the machine's other load, unlike CPU time (gateway_overhead.py);
they leave out the kernel, which the hook does not call (the same syscalls on and off).
The request path leaves out the timer handlers as well: the metrics flush (once a second)
and the endpoint feed's poll run by the clock, and callgrind slows the worker fifty-fold,
so they would count fifty times their share per request. The event loop's own work
still moves with the load (more wake-ups per request when the worker is slow), by a few
hundred instructions from run to run: the log phase (the Lua log handler, inclusive,
where the hook and the map it reads run) is the steady number, and the last line puts
it on top of the "off" request path.

    python benchmarks/metrics_hook_instructions.py [--requests 2000]
        [--endpoints dynamic|reload] [--route /plain/|/hit/]

Needs valgrind (apt-get install valgrind) and runs each gateway in the foreground with
`master_process off` under callgrind: about a minute per variant.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway_overhead import Gateway, backend_conf, gateway_conf  # noqa: E402
from processes import nginx_cmd, start, stop  # noqa: E402
from wrk import nginx_binary  # noqa: E402

from tests.helpers import find_tool, free_port, wait_for_port  # noqa: E402

# The metrics call at the end of the public server's log hook; behind the Lua balancer it
# wraps the balancer's call, which stays.
HOOK = re.compile(
    r' require\("nginxgen\.metrics"\)\.log\((require\("nginxgen\.balancer"\)\.log\(\))?\) \}'
)
BATCH = 500  # requests per connection (under nginx's keepalive_requests)
ROUTES = ("/plain/", "/hit/")  # the plain proxy, the cache hit (Redis, filled by the warm-up)


def get(port: int, n: int, route: str = "/plain/", header: str = "") -> None:
    """n GET `route` on keep-alive connections, each answer read whole."""
    extra = f"{header}\r\n" if header else ""
    req = f"GET {route} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    for _ in range(0, n, BATCH):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            buf = b""
            for _ in range(BATCH):
                s.sendall(req)
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        m = re.search(rb"content-length: *(\d+)", buf[:end], re.I)
                        size = end + 4 + (int(m.group(1)) if m else 0)
                        if len(buf) >= size:
                            buf = buf[size:]
                            break
                    chunk = s.recv(65536)
                    if not chunk:
                        raise SystemExit("the gateway closed the connection")
                    buf += chunk


def inclusive(annotate: str, dump: Path) -> dict[str, int]:
    """Inclusive instructions of the functions `dump` names: timer handlers
    (ngx_event_expire_timers: the metrics flush and the endpoint feed's poll run by the
    clock, and under callgrind's slowdown fifty times as often per request as they
    would) and the log phase's Lua (ngx_http_lua_log_handler: the hooks)."""
    out = subprocess.run(
        [annotate, "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for name in ("ngx_event_expire_timers", "ngx_http_lua_log_handler"):
        m = re.search(rf"^\s*([\d,]+) .*:{name} \[", out, re.M)
        found[name] = int(m.group(1).replace(",", "")) if m else 0
    return found


@dataclass(frozen=True)
class Count:
    """Instructions per request."""

    path: float  # the request path: everything but timer handlers
    log: float  # the log phase's Lua handler: the balancer's and metrics' hooks
    timers: float


def instructions(
    valgrind: str,
    conf: Path,
    port: int,
    n: int,
    work: Path,
    name: str,
    route: str,
    header: str = "",
) -> Count:
    """Instructions per request of the gateway `conf` over n requests of `route` after a
    warm-up."""
    out = work / f"callgrind.{name}"
    cmd = [valgrind, "--tool=callgrind", "--smc-check=all", f"--callgrind-out-file={out}"]
    proc = subprocess.Popen(
        [*cmd, nginx_binary(), "-c", str(conf), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"{name}.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        wait_for_port(port, 300)  # valgrind starts slowly on a loaded machine
        get(port, BATCH, route, header)  # warm up: the JIT compiles the hook
        time.sleep(1)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        get(port, n, route, header)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
    dumps = sorted(work.glob(f"callgrind.{name}.*"))  # the -d dump (the last: X at exit)
    if not dumps:
        raise SystemExit(f"callgrind wrote no dump: {(work / f'{name}.log').read_text()[-1500:]}")
    dump = dumps[0]
    m = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
    if not m:
        raise SystemExit(f"no totals in {dump}")
    parts = inclusive(shutil.which("callgrind_annotate") or "callgrind_annotate", dump)
    timers = parts["ngx_event_expire_timers"]
    return Count((int(m.group(1)) - timers) / n, parts["ngx_http_lua_log_handler"] / n, timers / n)


def variant(conf: Path, name: str, work: Path, bare: bool = False) -> tuple[Path, int]:
    """conf in the foreground without a master, on fresh ports; `bare`: without the calls
    of the metrics hook (the public server's log_by_lua_block, the cached route's)."""
    text = conf.read_text()
    ports = [free_port(), free_port()]
    it = iter(ports)
    text = re.sub(r"listen 127\.0\.0\.1:\d+;", lambda _: f"listen 127.0.0.1:{next(it)};", text)
    head = f"pid {work}/{name}.pid;\nmaster_process off;\ndaemon off;"
    text = re.sub(r"^pid .*;", head, text, flags=re.M)
    if bare:
        text, found = HOOK.subn(lambda m: f" {m.group(1) or ''} }}", text)
        if not found:
            raise SystemExit("the rendered config has no metrics hook to take out")
    path = work / f"{name}.conf"
    path.write_text(text)
    return path, ports[0]


def callgrind() -> str:
    """valgrind's path, or exit: callgrind_control must be there too (it zeroes and dumps)."""
    valgrind = find_tool("valgrind")
    if valgrind is None or find_tool("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    return valgrind


def batches(requests: int) -> int:
    """`requests` in whole connections of BATCH, at least one."""
    return max(BATCH, requests // BATCH * BATCH)


def measure(
    valgrind: str,
    conf: Path,
    name: str,
    work: Path,
    n: int,
    route: str,
    header: str = "",
    bare: bool = False,
    label: str = "",
) -> Count:
    """Count `conf` as variant `name` (see variant()) over n requests of `route`; says
    `label` (default: the name) on stderr first, since each variant takes a minute."""
    path, port = variant(conf, name, work, bare)
    print(f"{label or name} ...", file=sys.stderr, flush=True)
    return instructions(valgrind, path, port, n, work, name, route, header)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--endpoints", choices=("dynamic", "reload"), default="dynamic")
    parser.add_argument("--route", choices=ROUTES, default="/plain/")
    args = parser.parse_args()
    n = batches(args.requests)
    valgrind = callgrind()
    redis_server = find_tool("redis-server")
    if args.route == "/hit/" and redis_server is None:
        raise SystemExit("redis-server is not installed (scripts/test installs it)")
    work = Path(tempfile.mkdtemp(prefix="nginxgen-callgrind-"))
    work.chmod(0o755)
    backend, auth, redis = free_port(), free_port(), free_port()
    procs = []
    results: dict[str, Count] = {}
    try:
        if args.route == "/hit/" and redis_server is not None:
            cmd = [redis_server, "--port", str(redis), "--bind", "127.0.0.1", "--save", ""]
            procs.append(start([*cmd, "--dir", str(work)], redis, work / "redis.log"))
        procs.append(
            start(nginx_cmd(backend_conf(work, backend, auth)), backend, work / "backend.log")
        )
        off, on = (
            gateway_conf(
                work, Gateway(name, free_port(), free_port()), backend, auth, redis, args.endpoints
            )
            for name in ("off", "on")
        )
        for name, conf, bare in (("off", off, False), ("empty", on, True), ("on", on, False)):
            results[name] = measure(valgrind, conf, name, work, n, args.route, bare=bare)
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"user-space instructions per request of the gateway worker, {args.route}, {n} "
        f"requests, endpoints {args.endpoints}; the request path leaves out timer handlers"
    )
    print(f"{'':<6} {'request path':>12} {'added':>7} {'log phase':>9} {'added':>7} {'timers':>7}")
    base = results["off"]
    for name, what in (
        ("off", "metrics: false"),
        ("empty", "metrics on, without the call of the metrics hook"),
        ("on", "metrics: true"),
    ):
        c = results[name]
        print(
            f"{name:<6} {c.path:>12.0f} {c.path - base.path:>+7.0f} {c.log:>9.0f} "
            f"{c.log - base.log:>+7.0f} {c.timers:>7.0f}  {what}"
        )
    on = results["on"]
    print(
        f"off/on of the request path: {base.path / on.path:.1%}; with the other parts as "
        f"off has them and the log phase as measured: "
        f"{base.path / (base.path - base.log + on.log):.1%}"
    )


if __name__ == "__main__":
    main()
