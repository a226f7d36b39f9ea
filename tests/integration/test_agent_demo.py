"""examples/agent-demo.sh runs end to end, and leaves nothing behind: no process, no dir."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

DEMO = REPO / "examples" / "agent-demo.sh"

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("etcd", "etcdctl", "nginx", "curl")),
    reason="the demo needs etcd, etcdctl, nginx and curl",
)


def demo_dir(output: str) -> Path:
    found = re.search(r"/tmp/nginxgen-agent-demo\.\w+", output)
    assert found, output[-3000:]
    return Path(found.group(0))


def leftovers(directory: Path) -> list[str]:
    """Command lines of live processes that mention the demo's temp dir."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(directory) in cmdline:
            out.append(f"{proc.name}: {cmdline}")
    return out


def clean_afterwards(directory: Path) -> None:
    deadline = time.monotonic() + 15
    while leftovers(directory) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(directory) == []
    assert not directory.exists()


def run_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_demo_walks_through_the_whole_loop_and_cleans_up():
    done = subprocess.run(
        ["bash", str(DEMO)], capture_output=True, text=True, timeout=300, env=run_env()
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for line in (
        "registered in etcd",
        "     10 backend a\n     10 backend b",
        "marking down",
        "     20 backend b",  # a out while its health fails, and again after its crash
        "marking up",
        "(HTTP 503)",  # stale while etcd is down ...
        "reachable again",  # ... and everyone back afterwards
        "state=draining",
        "deregistered from etcd",
        '{"error":"service unavailable","service":"web"}',
    ):
        assert line in output, f"{line!r} not in the demo's output:\n{output[-3000:]}"
    assert "gave up waiting" not in output and "Traceback" not in output
    clean_afterwards(demo_dir(output))


def test_demo_interrupted_midway_still_cleans_up(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(DEMO)], stdout=out, stderr=out, env=run_env())
    try:
        deadline = time.monotonic() + 120
        while "## failure" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    clean_afterwards(demo_dir(log.read_text(errors="replace")))
