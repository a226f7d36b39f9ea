"""Write a file without ever leaving a torn one, and put back exactly what was there.

The config install (deploy/install.py), the warm-up state file and the file registry all
write through here.

What a write promises (POSIX filesystems):
- readers see the old file or the new one, never a mix (temp file, fsync, rename, fsync
  of the directory); where rename is impossible (a single-file bind mount: EBUSY/EXDEV)
  the bytes are written in place, which is not atomic, so the free space is checked first
  and the old bytes are put back if the write fails anyway;
- a symlink is followed to the file it names, and that file is replaced in its own
  directory (a Kubernetes ConfigMap mount is a chain of links; the link stays);
- a directory, a device, a FIFO or a socket is refused, never replaced;
- a missing directory is an error: nothing here creates directories (a typo in `-o`
  must not grow a tree). `watch` creates the ones its spec names (`ensure_runtime_dirs`).

Every failure is an `InstallError` (an OSError) whose message is one sentence naming the
path, and leaves the target as it was.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class InstallError(OSError):
    """A file could not be written; nothing was changed. str() is one sentence."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(code or 0, message)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class WriteResult:
    path: str  # the file written: a symlink's final target
    changed: bool  # False: the file already held exactly this text
    backup: str | None  # where the previous content was kept on disk, for people
    in_place: bool = False  # rename was impossible (single-file bind mount)
    # Exactly the bytes that were there before (None: no file), for restore_previous.
    previous: bytes | None = field(default=None, repr=False, compare=False)


def install_target(path: str | Path) -> Path:
    """The regular file a write to `path` replaces, after following symlinks.

    Raises InstallError for a directory, a device or other non-regular file, and for a
    directory that does not exist.
    """
    given = Path(path)
    target = Path(os.path.realpath(given))
    shown = str(given) if target == given.absolute() else f"{given} (-> {target})"
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InstallError(f"cannot write {shown}: {_why(exc)}", exc.errno) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InstallError(f"{shown} is a directory; give the path of a file", errno.EISDIR)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InstallError(
            f"{shown} is a {_kind(st.st_mode)}, not a regular file; refusing to replace it",
            errno.EINVAL,
        )
    if not target.parent.is_dir():
        raise InstallError(
            f"cannot write {shown}: directory {target.parent} does not exist (create it first)",
            errno.ENOENT,
        )
    return target


def write_atomic(path: str | Path, content: str | bytes, *, backup: bool = True) -> WriteResult:
    """Write `content` to `path` (see the module docstring for what is promised).

    With `backup`, the previous content is also kept as `<file>.bak` beside the target.
    """
    target = install_target(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        old: bytes | None = target.read_bytes()
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise InstallError(f"cannot read {target}: {_why(exc)}", exc.errno) from None
    if old == data:
        return WriteResult(str(target), False, None, previous=old)
    backup_path = None
    if backup and old is not None:
        backup_path = str(target) + ".bak"
        try:
            _write_replace(Path(backup_path), old)
        except OSError as exc:
            why = f"cannot write the backup {backup_path}: {_why(exc)}"
            raise InstallError(f"{why}; {target} is unchanged", exc.errno) from None
    try:
        _write_replace(target, data)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV) or old is None:
            raise InstallError(f"cannot write {target}: {_why(exc)}", exc.errno) from None
        _write_in_place(target, data, old)
        return WriteResult(str(target), True, backup_path, in_place=True, previous=old)
    return WriteResult(str(target), True, backup_path, previous=old)


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


def _write_in_place(target: Path, data: bytes, old: bytes) -> None:
    """Overwrite a file that cannot be renamed over. Not atomic: a reader may see a mix
    for a moment, so the space is checked first and the old bytes are put back if the
    write fails anyway (they fit: their blocks are still allocated)."""
    try:
        fs = os.statvfs(target)
    except OSError:
        fs = None
    if fs is not None and fs.f_frsize > 0:
        block = fs.f_frsize
        more = (math.ceil(len(data) / block) - math.ceil(len(old) / block)) * block
        free = (fs.f_bfree if os.geteuid() == 0 else fs.f_bavail) * block
        if more > free:
            raise InstallError(
                f"cannot write {target} in place: {more} more bytes needed, {free} free on "
                f"its filesystem; the file is unchanged",
                errno.ENOSPC,
            )
    try:
        _overwrite(target, data)
    except OSError as exc:
        why = f"cannot write {target} in place: {_why(exc)}"
        try:
            _overwrite(target, old)
        except OSError as again:
            raise InstallError(
                f"{why}, and putting the old bytes back failed too ({_why(again)})", exc.errno
            ) from None
        raise InstallError(f"{why}; the previous content is restored", exc.errno) from None


def _overwrite(target: Path, data: bytes) -> None:
    with open(target, "r+b") as fh:
        fh.write(data)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())


def remove_stale_temps(path: str | Path) -> list[str]:
    """Delete temp files a killed writer left next to `path` (`.<name>.*.tmp`).

    Only safe while no other writer targets the same file, so `watch` calls it at start.
    """
    target = Path(os.path.realpath(path))
    removed = []
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            continue
        removed.append(str(tmp))
    return removed


def restore_previous(written: WriteResult) -> str:
    """Put back exactly what `written` replaced: the old bytes, or no file if there was
    none. Returns what was done, for the log; raises InstallError if it could not."""
    if not written.changed:
        return f"{written.path} was not changed by this apply"
    if written.previous is None:
        try:
            os.unlink(written.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InstallError(f"cannot remove {written.path}: {_why(exc)}", exc.errno) from None
        return f"removed {written.path} (there was no file before)"
    write_atomic(written.path, written.previous, backup=False)
    return f"restored the previous {written.path}"


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    )
    return next((name for test, name in kinds if test(mode)), "special file")
