"""What the gateway benchmarks share besides wrk: starting and stopping the servers they
measure, and rendering a spec with nginxgen the way a user does (the CLI, `-o`).

    from processes import nginx_cmd, render, start, stop
    proc = start(nginx_cmd(render(work / "nginxgen.yaml", work / "gw.conf")), port, work / "gw.log")
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from wrk import nginx_binary

from tests.helpers import wait_for_port

REPO = Path(__file__).resolve().parent.parent


def nginx_cmd(conf: Path) -> list[str]:
    """nginx in the foreground on `conf`, its error log on stderr."""
    return [nginx_binary(), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"]


def start(cmd: list[str], port: int, log: Path, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """Start `cmd` with its output appended to `log`; return once `port` accepts, or exit
    with the end of the log."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    try:
        wait_for_port(port, timeout)
    except TimeoutError:
        stop(proc)
        raise SystemExit(f"{cmd[0]} did not start:\n{log.read_text()[-2000:]}") from None
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Graceful, then fast shutdown (a killed nginx master would orphan its workers); other
    programs get SIGTERM."""
    args = proc.args if isinstance(proc.args, list) else [proc.args]
    nginx = "nginx" in Path(str(args[0])).name or "openresty" in Path(str(args[0])).name
    for sig in (signal.SIGQUIT, signal.SIGTERM) if nginx else (signal.SIGTERM,):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    proc.wait(5)


def render(spec: Path, conf: Path) -> Path:
    """`nginxgen render -c spec -o conf`, or exit with what it said."""
    cmd = [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(conf)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"render of {spec} failed:\n{result.stderr}")
    return conf
