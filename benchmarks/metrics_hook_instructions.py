"""What the metrics log hook costs in instructions: callgrind counts of one nginx worker
(user space: nginx, lua-nginx-module, LuaJIT and its traces, libc, OpenSSL) over a fixed
load on the plain proxy route, for the gateway rendered with metrics off, on, and on
with the hook replaced by an empty `log_by_lua_block` (what entering Lua costs alone).

Counts do not move with the machine's other load, unlike CPU time (gateway_overhead.py);
they leave out the kernel, which the hook does not call (the same syscalls on and off).

    python benchmarks/metrics_hook_instructions.py [--requests 2000]

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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway_overhead import Gateway, backend_conf, gateway_conf  # noqa: E402
from processes import nginx_cmd, start, stop  # noqa: E402
from wrk import nginx_binary  # noqa: E402

from tests.helpers import find_tool, free_port, wait_for_port  # noqa: E402

HOOK = 'log_by_lua_block { require("nginxgen.metrics").log() }'
BATCH = 500  # requests per connection (under nginx's keepalive_requests)


def get(port: int, n: int, path: str = "/plain/", header: str = "") -> None:
    """n GET `path` on keep-alive connections, each answer read whole."""
    extra = f"{header}\r\n" if header else ""
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
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


def instructions(
    valgrind: str,
    conf: Path,
    port: int,
    n: int,
    work: Path,
    name: str,
    paths: tuple[str, ...] = ("/plain/",),
    header: str = "",
) -> dict[str, float]:
    """Instructions per request of the gateway `conf`, per path: n requests each after a
    warm-up, counted apart (callgrind zeroed before and dumped after each path)."""
    out = work / f"callgrind.{name}"
    cmd = [valgrind, "--tool=callgrind", "--smc-check=all", f"--callgrind-out-file={out}"]
    proc = subprocess.Popen(
        [*cmd, nginx_binary(), "-c", str(conf), "-e", "stderr"],
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"{name}.log", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        wait_for_port(port, 120)
        for path in paths:
            get(port, BATCH, path, header)  # warm up: the JIT compiles the hooks
        time.sleep(1)
        for path in paths:
            control = ["callgrind_control", "-z", str(proc.pid)]
            subprocess.run(control, check=True, capture_output=True)
            get(port, n, path, header)
            control[1] = "-d"
            subprocess.run(control, check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
    # The -d dumps in order (callgrind numbers them; the last, at exit, is left out).
    dumps = sorted(
        work.glob(f"callgrind.{name}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1] or 0)
    )
    if len(dumps) < len(paths):
        raise SystemExit(f"callgrind wrote no dump: {(work / f'{name}.log').read_text()[-1500:]}")
    out = {}
    for path, dump in zip(paths, dumps, strict=False):
        m = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
        if not m:
            raise SystemExit(f"no totals in {dump}")
        out[path] = int(m.group(1)) / n
    return out


def variant(conf: Path, name: str, work: Path, hook: str | None) -> tuple[Path, int]:
    """conf in the foreground without a master, on fresh ports; hook replaces the metrics
    log hook of the public server."""
    text = conf.read_text()
    ports = [free_port(), free_port()]
    it = iter(ports)
    text = re.sub(r"listen 127\.0\.0\.1:\d+;", lambda _: f"listen 127.0.0.1:{next(it)};", text)
    head = f"pid {work}/{name}.pid;\nmaster_process off;\ndaemon off;"
    text = re.sub(r"^pid .*;", head, text, flags=re.M)
    if hook is not None:
        if HOOK not in text:
            raise SystemExit("the rendered config has no metrics hook to replace")
        text = text.replace(HOOK, hook, 1)
    path = work / f"{name}.conf"
    path.write_text(text)
    return path, ports[0]


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
    backend, auth, redis = free_port(), free_port(), free_port()
    procs = []
    results: dict[str, float] = {}
    try:
        procs.append(
            start(nginx_cmd(backend_conf(work, backend, auth)), backend, work / "backend.log")
        )
        off = gateway_conf(work, Gateway("off", free_port(), free_port()), backend, auth, redis)
        on = gateway_conf(work, Gateway("on", free_port(), free_port()), backend, auth, redis)
        for name, conf, hook in (
            ("off", off, None),
            ("empty", on, "log_by_lua_block { }"),
            ("on", on, None),
        ):
            path, port = variant(conf, name, work, hook)
            print(f"{name} ...", file=sys.stderr, flush=True)
            results[name] = instructions(valgrind, path, port, n, work, name)["/plain/"]
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    print(f"user-space instructions per request of the gateway worker, /plain/, {n} requests")
    base = results["off"]
    for name, what in (
        ("off", "metrics: false"),
        ("empty", "metrics on, the hook an empty log_by_lua_block"),
        ("on", "metrics: true"),
    ):
        v = results[name]
        print(f"{name:<6} {v:>8.0f}  {v - base:>+7.0f}  {what}")


if __name__ == "__main__":
    main()
