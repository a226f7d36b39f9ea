"""The wrapped program (`nginxgen agent ... -- CMD`) and the process group it runs in.

The program is started as the leader of its own process group, and stopping it means
stopping the group: `sh -c 'server; echo done'` is a shell whose child is the server, and
a signal to the shell alone leaves the server running. Reload-style signals (SIGHUP,
SIGUSR1, SIGUSR2) go to the program only, as a shell or a master process expects.

What is not promised: a process that leaves the group (setsid, a daemon's double fork)
is out of reach; and when the agent itself is SIGKILLed, the kernel stops the program
(Linux parent-death signal) but not what it started — the container runtime or systemd
unit around the agent reaps those.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def start(command: Sequence[str]) -> subprocess.Popen[bytes]:
    """Run command as the leader of a new process group (raises OSError)."""
    return subprocess.Popen(list(command), preexec_fn=_child_setup)


def _child_setup() -> None:
    # Own process group: a terminal's Ctrl-C reaches the agent only, which drains first
    # and stops the program afterwards. If the agent dies, the program gets SIGTERM.
    os.setpgid(0, 0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the program outlives a killed agent


def signal_group(pgid: int, signum: int) -> None:
    """Send signum to every process of the group; an empty group is not an error."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def reap_group(pgid: int) -> None:
    """Collect members of the group that are our own exited children. When the agent is
    PID 1 in a container, orphans of the group are re-parented to it and would stay
    zombies otherwise. Call only once the leader has been waited for (subprocess owns
    that status)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_alive(pgid: int) -> bool:
    """Some process of the group is still running (zombies, which hold no port or file,
    do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member that changed its user still exists
    members = group_members(pgid)
    return members is None or bool(members)


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) pids in the group from /proc; None where there is no /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    found = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone while we looked
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found
