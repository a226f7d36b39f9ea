"""Put a verified config in place without ever leaving a torn file."""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


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
