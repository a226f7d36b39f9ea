"""`nginxgen agent ... -- CMD`: the program's whole process group is stopped, not only
the process the agent started (a shell wrapper's child is the server that holds the port).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for_port
from tests.helpers.agent import AgentProcess, eventually, write_agent_spec

SERVER = textwrap.dedent(
    """
    import http.server, signal, sys
    if sys.argv[2] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    http.server.ThreadingHTTPServer(
        ("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler
    ).serve_forever()
    """
)


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups a test made; whatever of them is left is killed at teardown."""
    made: list[int] = []
    yield made
    for pgid in made:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wrapped_server(
    tmp_path: Path, agents, groups: list[int], mode: str, *extra: str
) -> tuple[AgentProcess, int, int]:
    """An agent running `sh -c 'python server.py PORT; echo done'`: the server is the
    shell's child, the agent's grandchild. Returns (agent, port, process group)."""
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    spec = write_agent_spec(tmp_path, {"kind": "file", "path": "services.yaml"})
    shell = f"{sys.executable} {script} {port} {mode}; echo done"
    agent = agents(
        spec,
        *("--service", "app", "--id", "app-1", "--address", f"127.0.0.1:{port}"),
        *("--drain", "0s", *extra, "--", "sh", "-c", shell),
    )
    found = eventually(
        lambda: re.search(r"started sh \(pid (\d+)\)", agent.log()), 30, "the start", agent
    )
    pgid = int(found.group(1))
    groups.append(pgid)
    wait_for_port(port, timeout=30)
    assert len(group_members(pgid)) == 2  # the shell and its server
    return agent, port, pgid


def test_sigterm_stops_the_whole_process_group(tmp_path, agents, groups):
    agent, port, pgid = wrapped_server(tmp_path, agents, groups, "plain")
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 128 + signal.SIGTERM, agent.log()
    assert not port_open(port)
    assert group_members(pgid) == []
    assert f"SIGTERM to process group {pgid}" in agent.log()


def test_a_group_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path, agents, groups):
    agent, port, pgid = wrapped_server(
        tmp_path, agents, groups, "ignore-term", "--stop-timeout", "1s"
    )
    agent.signal(signal.SIGTERM)
    agent.wait(30)
    assert not port_open(port)
    assert group_members(pgid) == []
    assert f"process group {pgid} still running after 1s: SIGKILL" in agent.log()


def test_what_the_program_leaves_behind_is_stopped_when_it_exits(tmp_path, agents, groups):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    spec = write_agent_spec(tmp_path, {"kind": "file", "path": "services.yaml"})
    agent = agents(
        spec,
        *("--service", "app", "--address", f"127.0.0.1:{port}", "--"),
        *("sh", "-c", f"{sys.executable} {script} {port} plain & sleep 1; exit 3"),
    )
    found = eventually(lambda: re.search(r"started sh \(pid (\d+)\)", agent.log()), 30, "start")
    groups.append(int(found.group(1)))
    assert agent.wait(30) == 3, agent.log()
    assert not port_open(port)
    assert group_members(int(found.group(1))) == []


def test_the_program_dies_with_a_killed_agent(tmp_path, agents, groups):
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = free_port()
    spec = write_agent_spec(tmp_path, {"kind": "file", "path": "services.yaml"})
    agent = agents(
        spec,
        *("--service", "app", "--address", f"127.0.0.1:{port}", "--"),
        *(sys.executable, str(script), str(port), "plain"),
    )
    found = eventually(lambda: re.search(r"\(pid (\d+)\)", agent.log()), 30, "the start", agent)
    groups.append(int(found.group(1)))
    wait_for_port(port, timeout=30)
    agent.signal(signal.SIGKILL)
    agent.wait(30)
    eventually(lambda: not port_open(port), 30, "the program gone with the agent")
