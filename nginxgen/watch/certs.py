"""Certificate files as `watch` sees them: a renewed certificate changes no byte of
nginx.conf, yet nginx serves it only after a reload. Files are compared by content (a
renewal tool may keep the mtime, or replace the file by rename), read on each wait slice:
a few PEM files cost microseconds."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def _digest(paths: tuple[str, ...]) -> bytes:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.encode() + b"\0")
        try:
            h.update(Path(path).read_bytes())
        except OSError as exc:  # being replaced, or gone: the next look decides
            h.update(f"unreadable: {exc.errno}".encode())
        h.update(b"\0")
    return h.digest()


class CertificateFiles:
    """`changed()` says once per change that the files differ from when last looked at;
    `served()` records the contents the running nginx loaded."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = tuple(dict.fromkeys(paths))
        self._seen = self._served = self._look()

    def _look(self) -> bytes:
        return _digest(self.paths) if self.paths else b""

    def changed(self) -> bool:
        now = self._look()
        if now == self._seen:
            return False
        self._seen = now
        return True

    @property
    def pending(self) -> bool:
        """Contents seen that the running nginx has not loaded yet."""
        return self._seen != self._served

    def served(self) -> None:
        self._served = self._seen
