"""examples/agent-demo.sh runs end to end, and leaves nothing behind: no process, no dir."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, require_component

DEMO = REPO / "examples" / "agent-demo.sh"
TOOLS = ("etcd", "etcdctl", "nginx", "curl")

pytestmark = pytest.mark.requires(*TOOLS)


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


def run_env(python: str = sys.executable) -> dict[str, str]:
    """The demo runs nginxgen with `python`, and the tools the tests found, first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dirs = [str(Path(require_component(t)).parent) for t in TOOLS]
    env["PATH"] = os.pathsep.join([*dict.fromkeys(dirs), env.get("PATH", "")])
    env["PYTHON"] = python
    return env


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


def test_an_interpreter_without_the_dependencies_fails_at_once_with_the_real_error(tmp_path):
    """As on a fresh machine: the system python has none of nginxgen's dependencies."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    bare = str(tmp_path / "bare" / "bin" / "python")
    done = subprocess.run(
        ["bash", str(DEMO)], capture_output=True, text=True, timeout=60, env=run_env(bare)
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot run {bare} -m nginxgen.cli" in done.stderr
    assert "ModuleNotFoundError: No module named" in done.stderr
    assert "/tmp/nginxgen-agent-demo." not in done.stdout  # stopped before starting anything


def test_an_agent_that_exits_early_stops_the_demo_with_its_log(tmp_path):
    """The backend cannot start, so its agent exits: the demo says so instead of waiting."""
    python = tmp_path / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = http.server ]; then echo "backend cannot bind (test)" >&2; exit 3; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    done = subprocess.run(
        ["bash", str(DEMO)], capture_output=True, text=True, timeout=120, env=run_env(str(python))
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert re.search(r"agent-demo: agent-[ab] exited early; the end of its log:", output), output
    assert "backend cannot bind (test)" in output
    assert "exited by itself with code 3" in output
    assert "gave up waiting" not in output
    clean_afterwards(demo_dir(output))
