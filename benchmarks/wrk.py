"""What the HTTP benchmarks share: one wrk runner and its parsed answer, and nginx found the
way the tests find it (tests/helpers: next to the interpreter, then PATH, then the
standard install directories).

    from wrk import nginx_binary, wrk
    run = wrk("http://127.0.0.1:8080/", seconds=5, connections=32)
    print(run.rps, run.p99_ms)
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from tests.helpers import NginxInstall, find_nginx, find_tool


def nginx_binary() -> str:
    return nginx_with_lua(lua=False).path


def nginx_with_lua(lua: bool = True) -> NginxInstall:
    """nginx or OpenResty (with its Lua module, unless `lua` is False), or exit saying how
    to install it; `.load_modules("lua")` gives the lines a hand-written config needs."""
    found = find_nginx()
    if found is None:
        raise SystemExit("nginx is not installed (apt-get install nginx; scripts/test does it)")
    if lua and found.missing_modules("lua"):
        raise SystemExit(f"{found.path} has no Lua module (apt-get install libnginx-mod-http-lua)")
    return found


def to_ms(text: str) -> float:
    """A wrk latency ('812.00us', '1.20ms', '2.01s') in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise SystemExit(f"cannot read a wrk latency: {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@dataclass(frozen=True)
class Run:
    rps: float
    requests: int
    avg: str  # as wrk prints it
    p50: str
    p99: str
    output: str

    @property
    def p50_ms(self) -> float:
        return to_ms(self.p50)

    @property
    def p99_ms(self) -> float:
        return to_ms(self.p99)


def wrk(
    url: str,
    seconds: int,
    connections: int,
    *,
    threads: int = 1,
    header: str | None = None,
    socket_errors: bool = True,  # False: a socket error fails the run too
    script: str | None = None,  # a wrk Lua script (e.g. requests that cycle paths)
) -> Run:
    """One wrk run with latency percentiles. Errors answered under load end the
    benchmark: a refused request is cheaper than a served one, so it is not comparable."""
    binary = find_tool("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; scripts/test does it)")
    cmd = [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    if script:
        cmd[1:1] = ["-s", script]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    avg = re.search(r"Latency\s+([\d.]+\w+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and avg and p50 and p99 and total):
        raise SystemExit(f"cannot read wrk output:\n{out}")
    if "Non-2xx" in out or (not socket_errors and "Socket errors" in out):
        raise SystemExit(f"{url} answered errors under load:\n{out}")
    return Run(
        float(rps.group(1)), int(total.group(1)), avg.group(1), p50.group(1), p99.group(1), out
    )
