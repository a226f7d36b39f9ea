"""Linux inotify through ctypes: wake when an entry of a directory changes, without polling.

Only what the file registry needs: one watch on one directory, events named by entry.
Elsewhere (not Linux, no libc symbol, the per-user instance or watch limit reached, the
directory missing) the constructor raises InotifyUnavailable with the reason, and the
caller polls instead. What is not promised: changes made through another kernel (NFS,
some FUSE and bind-mount setups) or to the target of a symlink in another directory
raise no event here, so a caller keeps a slow poll as a backstop.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000  # the kernel's queue overflowed: events were lost
IN_IGNORED = 0x8000  # the watch is gone (the directory was removed or unmounted)
IN_ONLYDIR = 0x01000000

WATCHED = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


class InotifyUnavailable(Exception):
    """inotify cannot watch this directory; the message says why, in a few words."""


@dataclass(frozen=True)
class Event:
    name: str  # the entry's name in the directory; "" for the directory itself
    mask: int


class DirectoryWatch:
    """One inotify instance watching one directory's entries. Not thread-safe."""

    def __init__(self, directory: Path) -> None:
        if not sys.platform.startswith("linux"):
            raise InotifyUnavailable(f"inotify is Linux-only ({sys.platform})")
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            raise InotifyUnavailable("libc has no inotify") from None
        add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise InotifyUnavailable(_why(ctypes.get_errno()))
        if add_watch(fd, os.fsencode(directory), WATCHED | IN_ONLYDIR) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise InotifyUnavailable(_why(err))
        self.fd: int | None = fd
        self.directory = directory

    def read(self, timeout: float) -> list[Event]:
        """The events that arrive within `timeout` seconds (all pending ones once the first
        is there); [] when none did. A signal handler that raises cuts the wait short."""
        if self.fd is None:
            return []
        poller = select.poll()  # not select.select: it fails on descriptors past 1023
        poller.register(self.fd, select.POLLIN)
        if not poller.poll(max(0.0, timeout) * 1000):
            return []
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        events, pos = [], 0
        while pos + _HEADER.size <= len(data):
            _wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
            pos += _HEADER.size
            name = data[pos : pos + length].rstrip(b"\0")
            pos += length
            events.append(Event(os.fsdecode(name), mask))
        return events

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _why(err: int) -> str:
    if err in (errno.EMFILE, errno.ENOSPC):
        return "the inotify instance or watch limit is reached (fs.inotify.max_user_*)"
    return os.strerror(err).lower() if err else "unknown error"
