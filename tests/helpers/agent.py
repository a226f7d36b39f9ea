"""Run `nginxgen agent` as a real process, as a container entrypoint would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .poll import poll_until
from .servers import REPO


class AgentProcess:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.args = args
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nginxgen.cli", "agent", *args],
                stdout=out,
                stderr=out,
                env=full_env,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout}s:\n{self.log()}") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        eventually(lambda: text in self.log(), timeout, f"{text!r} in the agent log", self)

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


def eventually(
    check: Callable[[], Any],
    timeout: float = 20.0,
    what: str = "condition",
    agent: AgentProcess | None = None,
    every: float = 0.05,
) -> Any:
    """poll_until, failing with the agent's log."""
    detail = (lambda: f"agent log:\n{agent.log()}") if agent else None
    return poll_until(check, timeout, what, every, detail)


def write_agent_spec(directory: Path, registry: dict[str, Any]) -> Path:
    path = directory / "nginxgen.yaml"
    spec = {"registry": registry, "routes": [{"path": "/", "service": "app"}]}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """For a fixture: start(spec, "--service", "app", ...) runs an agent; killed at teardown."""
    started: list[AgentProcess] = []

    def start(spec: Path, *args: str, env: dict[str, str] | None = None) -> AgentProcess:
        log = tmp_path / f"agent-{len(started)}.log"
        agent = AgentProcess(["-c", str(spec), *args], log, env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
