"""Ask the running nginx master to load the installed config, and never signal a stranger."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..spec import NginxSpec
from .nginx_bin import Binary


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    message: str
    running: bool = True  # False: there is no master yet; it will start on the new file


def read_pid(path: str | Path) -> int | None:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


NGINX_NAMES = ("nginx", "openresty")


def not_an_nginx_master(pid: int) -> str | None:
    """None when `pid` is an nginx/OpenResty master (or there is no /proc to ask);
    otherwise what it is instead, e.g. "`sleep 60`", for the log line.

    A pid file outlives its process and pids are reused: signalling whatever holds the
    number now would hit an unrelated process. The master sets its title to
    "nginx: master process ..."; with `master_process off` the command itself is nginx.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None  # not Linux: nothing to check with; trust the pid file
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return "gone"
    except OSError:
        return None  # hidden from us (hidepid): cannot tell, trust the pid file
    args = [a for a in raw.decode("utf-8", "replace").split("\0") if a]
    title = " ".join(args)
    if title.startswith("nginx: master process"):
        return None
    if not title.startswith("nginx: ") and args and Path(args[0]).name in NGINX_NAMES:
        return None
    if not args:
        return "a process without a command line (exiting?)"
    shown = title if len(title) <= 80 else title[:77] + "..."
    return f"`{shown}`"


def find_master(pid_file: str | Path) -> tuple[int | None, str]:
    """(pid, "") for a running nginx master named by `pid_file`, else (None, why not)."""
    pid = read_pid(pid_file)
    if pid is None:
        return None, f"no pid in {pid_file}"
    other = not_an_nginx_master(pid)
    if other == "gone":
        return None, f"pid {pid} from {pid_file} is gone"
    if other is not None:
        return None, f"pid {pid} from {pid_file} is {other}, not an nginx master"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None, f"pid {pid} from {pid_file} is gone"
    except PermissionError:
        pass  # it exists; whether we may signal it is the caller's to find out
    return pid, ""


def reload_nginx(nginx: NginxSpec, binary: Binary | None, timeout: float = 30.0) -> ReloadResult:
    """Ask the running master to load the installed config.

    `reload_command` wins when set; `reload: binary` runs `<nginx|openresty> -s reload`;
    the default sends SIGHUP to the pid in `nginx.pid` (what `-s reload` does, minus
    parsing the config again and the need for the binary in the sidecar's image). Both of
    the latter first check that the pid is an nginx master: never signal a stranger.
    """
    if nginx.reload_command:
        return _run(list(nginx.reload_command), timeout)
    if nginx.reload == "binary" and binary is None:
        return ReloadResult(False, f"no {nginx.flavor} binary found for `-s reload`")
    pid, why = find_master(nginx.pid)
    if pid is None:
        return ReloadResult(False, f"nginx is not running ({why})", False)
    if nginx.reload == "binary":
        assert binary is not None
        return _run([binary.path, "-s", "reload", "-c", nginx.output], timeout)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        gone = f"nginx is not running (pid {pid} from {nginx.pid} is gone)"
        return ReloadResult(False, gone, False)
    except PermissionError:
        return ReloadResult(False, f"not allowed to signal nginx pid {pid} (run as its user)")
    return ReloadResult(True, f"sent SIGHUP to nginx master {pid}")


def _run(cmd: list[str], timeout: float) -> ReloadResult:
    shown = " ".join(cmd)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ReloadResult(False, f"`{shown}` timed out after {timeout:.0f}s")
    except OSError as exc:
        return ReloadResult(False, f"cannot run `{shown}`: {exc.strerror}")
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()
        return ReloadResult(False, f"`{shown}` failed: {detail[-1] if detail else out.returncode}")
    return ReloadResult(True, f"ran `{shown}`")
