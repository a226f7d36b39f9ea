"""The boot snapshot's delta journal (nginx.endpoints: dynamic; docs/dynamic-endpoints.md).

After a confirmed push the sidecar appends one record to `<snapshot>.journal` (the
push's generation and the services it carried) instead of rewriting the whole snapshot,
which at 10,000 services is 7.9 MB. nginx's init (lua/nginxgen/endpoints/journal.lua)
applies the snapshot, then the journal's records above it, in order.

    nginxgen-endpoints-journal 1 base=<the snapshot's generation>\\n
    <payload length> <crc32 of the payload, 8 hex digits>\\n<payload>\\n
    ...

A payload is a push document (`{"generation": G, "services": {...}}`). The header ties
the journal to one snapshot: a journal whose base is not the snapshot's generation (the
sidecar died between rewriting the snapshot and starting a new journal) is ignored, which
is right, since the new snapshot holds everything. A record cut short by a crash (its
length runs past the end, or its checksum fails) ends the journal: it and anything after
it are ignored, so what serves is the last whole record.

What is not promised: a record is fdatasync'd before `append` returns, but a push that was
confirmed and then lost with the sidecar before its record was written is not in the
journal (nor, before the journal, in the snapshot): the dict of a running nginx still
holds it, a restarted nginx serves the record before.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..util.atomic_write import InstallError, write_atomic

MAGIC = b"nginxgen-endpoints-journal 1"
# A record header exactly as Lua's pattern "^(%d+) (%x%x%x%x%x%x%x%x)$" reads it: int()
# alone would also take "+1", "1_0" or "0x00ffff", which nginx refuses.
_RECORD_HEADER = re.compile(rb"(\d+) ([0-9a-fA-F]{8})")


def journal_path(snapshot: str) -> str:
    """Where the journal of the snapshot at `snapshot` lives (nginx looks there too)."""
    return snapshot + ".journal"


def header(base: int) -> bytes:
    return MAGIC + b" base=%d\n" % base


def frame(payload: bytes) -> bytes:
    """One record: length and checksum first, so a torn one is told from a whole one."""
    return b"%d %08x\n" % (len(payload), zlib.crc32(payload)) + payload + b"\n"


@dataclass(frozen=True)
class Records:
    """What a journal's bytes hold: the base it continues, the whole records' payloads in
    order, and why the bytes after the last of them were ignored ("" when none were)."""

    base: int
    payloads: tuple[bytes, ...]
    cut: str = ""


def parse(data: bytes) -> Records | None:
    """The journal in `data`; None when it does not start with a journal header."""
    nl = data.find(b"\n")
    first = data[:nl] if nl >= 0 else b""
    prefix = MAGIC + b" base="
    if not first.startswith(prefix) or not first[len(prefix) :].isdigit():
        return None
    base, pos = int(first[len(prefix) :]), nl + 1
    out: list[bytes] = []
    while pos < len(data):
        cut = _frame_at(data, pos)
        if isinstance(cut, str):
            return Records(base, tuple(out), f"{len(data) - pos} bytes at offset {pos}: {cut}")
        payload, pos = cut
        out.append(payload)
    return Records(base, tuple(out))


def _frame_at(data: bytes, pos: int) -> tuple[bytes, int] | str:
    """(payload, where the next record starts), or why there is no whole record at `pos`."""
    nl = data.find(b"\n", pos, pos + 32)
    if nl < 0:
        return "an incomplete record header"
    head = _RECORD_HEADER.fullmatch(data, pos, nl)
    if head is None:
        return "not a record header"
    length, crc = int(head[1]), int(head[2], 16)
    end = nl + 1 + length
    if end + 1 > len(data):
        return "a record cut short"
    payload = data[nl + 1 : end]
    if data[end : end + 1] != b"\n" or zlib.crc32(payload) != crc:
        return "a record whose checksum does not match"
    return payload, end + 1


class Replayed(NamedTuple):
    """What nginx's init makes of a snapshot and its journal (feed.lua replay)."""

    generation: int
    services: dict[str, Any]
    applied: int  # records applied


def replay(generation: int, services: dict[str, Any], data: bytes | None) -> Replayed:
    """The snapshot (`generation`, `services`) with the records of the journal in `data`
    (None: none) that continue it applied in order, as nginx's init does: the first record
    that is not a push document above the one before ends the replay, as a torn one does
    (applying those after it would serve a state that never existed). nginx also refuses
    a record whose content schema.lua rejects; here it counts, so the generation is on
    the high side then: pushing above what nginx holds is always safe, and adopt.py
    trusts a snapshot only when the feed holds exactly its generation."""
    records = parse(data) if data is not None else None
    if records is None or records.base != generation:
        return Replayed(generation, services, 0)
    out, applied = dict(services), 0
    for payload in records.payloads:
        doc = _push_document(payload)
        if doc is None or doc[0] <= generation:
            break
        generation, applied = doc[0], applied + 1
        out.update(doc[1])
    return Replayed(generation, out, applied)


def _push_document(payload: bytes) -> tuple[int, dict[str, Any]] | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    gen, services = doc.get("generation"), doc.get("services")
    if not isinstance(gen, int) or isinstance(gen, bool) or not isinstance(services, dict):
        return None
    return gen, services


def read_journal(path: str) -> bytes | None:
    """The journal's bytes; None when it cannot be read (nginx then ignores it too)."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def effective_generation(path: str, snapshot: int) -> int:
    """The generation nginx holds after loading the snapshot (at `snapshot`) and its
    journal at `path` (`replay`)."""
    return replay(snapshot, {}, read_journal(path)).generation


class FileId(NamedTuple):
    """Which file, and how long, a writer left it: another writer's rewrite (a rename: a
    new inode) or append (a new size) since shows as a different FileId."""

    dev: int
    ino: int
    size: int


def file_id(st: os.stat_result) -> FileId:
    return FileId(st.st_dev, st.st_ino, st.st_size)


class Foreign(InstallError):
    """The journal on disk is not the one this writer left (`nginxgen render -o`, another
    watcher): appending to it would put our delta on another base."""


class Journal:
    """The open end of one snapshot's journal: `start` begins it (atomically, header only)
    right after that snapshot was written; `append` adds a record, to this very file only."""

    def __init__(self, path: str, ident: FileId) -> None:
        self.path = path
        self.ident = ident  # the file as we left it: where a failed append is cut back to

    @property
    def size(self) -> int:
        return self.ident.size

    @classmethod
    def start(cls, path: str, base: int, like: os.stat_result | None = None) -> Journal:
        """A journal holding no record yet, replacing any earlier one (InstallError).
        `like`: the snapshot's stat; the journal gets its mode (and group, where allowed),
        as it holds the same endpoints."""
        write_atomic(path, header(base), backup=False)
        try:
            if like is not None:
                os.chmod(path, stat.S_IMODE(like.st_mode))
                try:
                    os.chown(path, -1, like.st_gid)
                except OSError:
                    pass  # not ours to give away: the mode still holds
            return cls(path, file_id(os.stat(path)))
        except OSError as exc:
            raise InstallError(f"cannot start {path}: {_why(exc)}", exc.errno) from None

    def append(self, payload: bytes) -> None:
        """One framed record, written and fdatasync'd (InstallError; Foreign when the file
        is not the one this journal last left, untouched then). Appends hold an exclusive
        flock, so a failed one is cut back to our own end and never into a record another
        writer added. The caller must not append to this journal after a failure."""
        data = frame(payload)
        try:
            # O_NONBLOCK: a FIFO put in the journal's place fails instead of hanging.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
        except OSError as exc:
            raise InstallError(f"cannot append to {self.path}: {_why(exc)}", exc.errno) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InstallError(f"{self.path} is not a regular file", errno.EINVAL)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._check(fd)
            self._write(fd, data)
            if file_id(os.stat(self.path))[:2] != self.ident[:2]:
                # Replaced while we wrote: the record went to a file nginx no longer reads.
                raise Foreign(f"{self.path} was replaced by another writer", errno.ESTALE)
        except InstallError:
            raise
        except OSError as exc:
            raise InstallError(f"cannot append to {self.path}: {_why(exc)}", exc.errno) from None
        finally:
            os.close(fd)  # and the lock with it
        self.ident = self.ident._replace(size=self.ident.size + len(data))

    def _check(self, fd: int) -> None:
        got = file_id(os.fstat(fd))
        if got != self.ident:
            what = "replaced" if got[:2] != self.ident[:2] else "appended to"
            raise Foreign(f"{self.path} was {what} by another writer", errno.ESTALE)

    def _write(self, fd: int, data: bytes) -> None:
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self.ident.size)  # ours alone: the lock is held
            except OSError:
                pass  # the loader ignores the torn tail
            raise


def adopt(path: str, snapshot: int) -> Journal | None:
    """The journal at `path` as found, to append to, when it continues the snapshot at
    generation `snapshot` and ends in a whole record (after a torn one, a record would be
    ignored); None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    records = parse(data)
    if records is None or records.cut or records.base != snapshot or len(data) != st.st_size:
        return None
    return Journal(path, file_id(st))


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
