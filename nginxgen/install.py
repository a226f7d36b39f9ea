"""Put a verified config in place without ever leaving a torn file."""

from __future__ import annotations

import errno
import http.client
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .nginx_bin import Binary
from .spec import NginxSpec


@dataclass(frozen=True)
class WriteResult:
    path: str
    changed: bool  # False: the file already held exactly this text
    backup: str | None  # where the previous content was kept
    in_place: bool = False  # rename was impossible (single-file bind mount)


def write_atomic(path: str | Path, text: str, *, backup: bool = True) -> WriteResult:
    """Write `text` to `path` so that readers see the old file or the new, never a mix.

    Temp file in the same directory, fsync, rename over the target, fsync the directory.
    Atomic on POSIX filesystems only; where rename fails because the target is a bind
    mount (EBUSY/EXDEV), the content is written in place instead, which is not atomic.
    """
    target = Path(path)
    data = text.encode("utf-8")
    try:
        old = target.read_bytes()
    except FileNotFoundError:
        old = None
    if old == data:
        return WriteResult(str(target), False, None)
    target.parent.mkdir(parents=True, exist_ok=True)
    backup_path = None
    if backup and old is not None:
        backup_path = str(target) + ".bak"
        _write_replace(Path(backup_path), old)
    try:
        _write_replace(target, data)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        with open(target, "r+b") as fh:
            fh.write(data)
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
        return WriteResult(str(target), True, backup_path, in_place=True)
    return WriteResult(str(target), True, backup_path)


def _write_replace(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(path: str | Path) -> list[str]:
    """Delete temp files a killed writer left next to `path` (`.<name>.*.tmp`).

    Only safe while no other writer targets the same file, so `watch` calls it at start.
    """
    target = Path(path)
    removed = []
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            continue
        removed.append(str(tmp))
    return removed


def restore_backup(written: WriteResult) -> bool:
    """Put the previous config back after a failed reload. False: there was none."""
    if written.backup is None:
        return False
    old = Path(written.backup).read_text(encoding="utf-8")
    write_atomic(written.path, old, backup=False)
    return True


# --- reload -----------------------------------------------------------------------------


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


def reload_nginx(nginx: NginxSpec, binary: Binary | None, timeout: float = 30.0) -> ReloadResult:
    """Ask the running master to load the installed config.

    `reload_command` wins when set; `reload: binary` runs `<nginx|openresty> -s reload`;
    the default sends SIGHUP to the pid in `nginx.pid` (what `-s reload` does, minus
    parsing the config again and the need for the binary in the sidecar's image).
    """
    if nginx.reload_command:
        return _run(list(nginx.reload_command), timeout)
    if nginx.reload == "binary":
        if binary is None:
            return ReloadResult(False, f"no {nginx.flavor} binary found for `-s reload`")
        if read_pid(nginx.pid) is None:
            return ReloadResult(False, f"nginx is not running (no pid in {nginx.pid})", False)
        return _run([binary.path, "-s", "reload", "-c", nginx.output], timeout)
    pid = read_pid(nginx.pid)
    if pid is None:
        return ReloadResult(False, f"nginx is not running (no pid in {nginx.pid})", False)
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


# --- confirm ----------------------------------------------------------------------------

STATUS_PATH = "/nginxgen/generation"


def serving_generation(status_listen: str, timeout: float = 1.0) -> str | None:
    """The generation the workers answering the status listener loaded, or None."""
    host, _, port = status_listen.rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", STATUS_PATH, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(64).decode("ascii", "replace").strip()
        return body if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class Confirmation:
    ok: bool
    seen: str | None  # the last generation the status listener answered
    waited: float


def confirm_generation(status_listen: str, generation: str, timeout: float) -> Confirmation:
    """Poll until the status listener answers `generation` or `timeout` passes.

    Old workers keep accepting for a moment after a reload, so one answer from the old
    generation proves nothing; only the deadline does.
    """
    start = time.monotonic()
    seen = None
    while True:
        seen = serving_generation(status_listen)
        waited = time.monotonic() - start
        if seen == generation:
            return Confirmation(True, seen, waited)
        if waited >= timeout:
            return Confirmation(False, seen, waited)
        time.sleep(0.02)
