"""What the gateway benchmarks share besides wrk: starting and stopping the servers they
measure, and rendering a spec with nginxgen the way a user does (the CLI, `-o`), or
serving it under `nginxgen watch`.

    from processes import nginx_cmd, render, start, stop
    proc = start(nginx_cmd(render(work / "nginxgen.yaml", work / "gw.conf")), port, work / "gw.log")
    spec = {"nginx": watched_nginx(port), ...}  # written to work / "nginxgen.yaml"
    gw = Watched(work / "nginxgen.yaml", port, env)  # ... gw.stop()
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from wrk import nginx_binary

from tests.helpers import Nginx, free_port, wait_for_port

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


def watched_nginx(port: int, **settings: Any) -> dict[str, Any]:
    """The spec's `nginx` section that Watched expects (nginx.conf and nginx.pid beside
    the spec), listening on `port`, its status server on a free port, plus `settings`."""
    return {
        "flavor": "nginx",
        "listen": f"127.0.0.1:{port}",
        "output": "nginx.conf",
        "pid": "nginx.pid",
        "status_listen": f"127.0.0.1:{free_port()}",
        **settings,
    }


class Watched:
    """A gateway as a user runs it from a spec whose nginx output and pid are nginx.conf
    and nginx.pid beside it: `nginxgen watch --once` renders, nginx starts on port `port`,
    then `nginxgen watch` (with `args`, its output in watch.log there) follows the
    registry. The caller waits for the watcher's health port: only the spec names it."""

    def __init__(self, spec: Path, port: int, env: dict[str, str], *args: str) -> None:
        work = spec.parent
        cli = [sys.executable, "-m", "nginxgen.cli", "watch", "-c", str(spec), *args]
        subprocess.run([*cli, "--once"], check=True, env=env, capture_output=True)
        self.nginx = Nginx(work / "nginx.conf", work / "nginx.pid").start(port)
        self.log = open(work / "watch.log", "wb")  # noqa: SIM115 - closed in stop()
        self.watcher = subprocess.Popen(cli, env=env, stdout=self.log, stderr=self.log)

    def stop(self) -> None:
        """The watcher first, so that it reloads no nginx that is on its way out."""
        self.watcher.send_signal(signal.SIGTERM)
        self.watcher.wait(30)
        self.log.close()
        self.nginx.stop()
