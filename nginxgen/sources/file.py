"""File registry: services.yaml (or the same structure in JSON), read through
registry/file.py, the client the agent writes with.

services:
  users:
    - {id: users-1, address: 127.0.0.1:9001, weight: 10, state: up,
       registered_at: 2026-11-29T10:00:00Z, tags: [v2], meta: {zone: a}}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..model.catalog import Catalog, Dropped
from ..model.validate import CatalogBuilder, label
from ..registry.errors import UnusableVersion
from ..registry.file import ServicesFile, digest
from ..registry.shift import MAX_TEXT, file_path
from ..spec import FileRegistry
from ..util.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    DirectoryWatch,
    Event,
    InotifyUnavailable,
)
from .base import RegistryError

FIELDS = ("id", "address", "host", "port", "weight", "state", "registered_at", "tags", "meta")


# An in-place write is over when its writer closes the file, or (a writer that keeps the
# file open) once it has been quiet this long.
WRITE_QUIET = 0.25
# read() waits this long at most for a write in progress, then reports the file as unreadable.
WRITE_WAIT = 2.0
# inotify events that start an in-place write, end one (or the entry), or end the watch.
_STARTS = IN_MODIFY | IN_CREATE | IN_Q_OVERFLOW
_ENDS = IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM
_GONE = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF

log = logging.getLogger("nginxgen.file")


class FileSource:
    """Changes are noticed through inotify on the file's directory where Linux allows it
    (a rename into place and a closed in-place write, at once), with a content check every
    `poll` as a backstop; elsewhere by that check alone. With inotify, a file being written
    in place is not read until its writer closes it (or goes quiet for WRITE_QUIET)."""

    def __init__(
        self,
        config: FileRegistry,
        services: Sequence[str] = (),
        *,
        watch: Callable[[Path], DirectoryWatch] = DirectoryWatch,  # tests pass a failing one
        write_quiet: float = WRITE_QUIET,
        write_wait: float = WRITE_WAIT,
    ) -> None:
        self.file = ServicesFile(config.path)
        self.path = self.file.path
        self.poll = max(0.05, config.poll)
        self.splits = file_path(self.path)
        self._names = {self.path.name, self.splits.name}
        self._open_watch = watch
        self._watch: DirectoryWatch | None = None
        self._mode = ""  # how changes are noticed, as last logged ("inotify" or why not)
        self._writing: float | None = None  # last in-place write seen, while not closed
        self._writes = 0  # in-place writes seen: one during a read may have torn it
        self.write_quiet, self.write_wait = write_quiet, write_wait

    def _split_bytes(self) -> bytes:
        """The split overrides beside the registry (`nginxgen shift`); none: b""."""
        try:
            return self.splits.read_bytes()[: MAX_TEXT * 64]
        except OSError:
            return b""

    def read(self) -> Catalog:
        """RegistryError as UnusableVersion: a watcher backing off wakes on the next edit."""
        try:
            raw, splits = self._read_whole()
        except RegistryError as exc:  # missing or still written: any readable version is new
            raise UnusableVersion(str(exc), "") from None
        version = digest(raw + b"\0" + splits)
        try:
            catalog = parse_registry(raw, str(self.path), version)
        except RegistryError as exc:  # broken: wait for a version other than this one
            raise UnusableVersion(str(exc), version) from None
        return parse_splits(catalog, splits, str(self.splits))

    def _read_whole(self) -> tuple[bytes, bytes]:
        """Both files' bytes, neither read while a writer was at it in place, as far as
        inotify tells (without it: as they are; a rename into place never tears a read)."""
        give_up = time.monotonic() + self.write_wait
        while True:
            self._settle_writes(give_up)
            started = self._writes
            raw, splits = self.file.read_bytes(), self._split_bytes()
            if self._watch is None:
                return raw, splits
            self._relevant(self._watch.read(0))
            if self._writes == started:
                return raw, splits
            # Written to while we read: what we hold may be torn; read it again.
            if time.monotonic() >= give_up:
                raise self._still_written()

    def _settle_writes(self, give_up: float) -> None:
        """Wait until no in-place write is open; RegistryError past `give_up`."""
        if self._watch is not None:
            self._relevant(self._watch.read(0))
        while self._watch is not None:
            now = time.monotonic()
            if not self._being_written(now):
                return
            if now >= give_up:
                raise self._still_written()
            assert self._writing is not None
            self._relevant(self._watch.read(min(give_up, self._writing + self.write_quiet) - now))

    def _still_written(self) -> RegistryError:
        return RegistryError(
            f"{self.file.name}: still being written after {self.write_wait:g}s; "
            "not read while incomplete"
        )

    def _being_written(self, now: float) -> bool:
        if self._writing is not None and now - self._writing >= self.write_quiet:
            self._writing = None  # a writer holding the file open, quiet: done
        return self._writing is not None

    def _version(self) -> str | None:
        try:
            return digest(self.file.read_bytes() + b"\0" + self._split_bytes())
        except RegistryError:
            return None  # a file being replaced is briefly missing; the next read reports it

    def wait(self, version: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        watch = self._watcher()
        if watch is not None:
            self._relevant(watch.read(0))  # a write begun since the last wait or read
            watch = self._watch
        look = True  # the first look also covers what changed before the watch began
        next_look = 0.0
        while True:
            now = time.monotonic()
            writing = self._being_written(now)
            if (look or now >= next_look) and not writing:
                current = self._version()
                if current is not None and current != version:
                    return True
                next_look = now + self.poll  # the backstop: a change inotify cannot see
            if now >= deadline:
                return False
            if writing and self._writing is not None:
                until = min(deadline, self._writing + self.write_quiet)
            else:
                until = min(deadline, next_look)
            if watch is None:
                time.sleep(max(0.0, until - now))
                look = True
                continue
            look = self._relevant(watch.read(until - now)) or writing
            watch = self._watch  # None when the directory went away

    def _relevant(self, events: list[Event]) -> bool:
        """Note in-place writes starting and ending; True when the registry's entries were
        touched. A watch that lost its directory is dropped (the next wait polls)."""
        touched = False
        via_link = self._via_link() if events else False
        for ev in events:
            if ev.mask & _GONE and not ev.name:
                self._drop_watch("the directory was removed or moved")
                return True
            ours = ev.name in self._names
            if ev.mask & IN_Q_OVERFLOW or ours or via_link:
                touched = True
                # Only our own entries start an in-place write: through a symlink any
                # entry may be the target, but an unrelated busy file (a log) must not
                # keep the registry "being written" for ever.
                if ev.mask & _STARTS and (ours or ev.mask & IN_Q_OVERFLOW):
                    self._writing = time.monotonic()
                    self._writes += 1
                elif ev.mask & _ENDS:
                    self._writing = None
        return touched

    def _via_link(self) -> bool:
        # Through a symlink (a Kubernetes ConfigMap swaps `..data`): any entry may matter.
        return self.path.is_symlink()

    def _watcher(self) -> DirectoryWatch | None:
        if self._watch is None:
            try:
                self._watch = self._open_watch(self.path.parent)
                self._writing = None
                mode, line = "inotify", "changes noticed through inotify"
            except InotifyUnavailable as exc:
                mode, line = str(exc), f"inotify unavailable ({exc}); polling"
            if mode != self._mode:
                self._mode = mode
                level = logging.INFO if self._watch is not None else logging.WARNING
                log.log(level, f"{self.file.name}: {line}, content checked every {self.poll:g}s")
        return self._watch

    def _drop_watch(self, why: str) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
            self._writing = None
            self._mode = why
            log.warning(f"{self.file.name}: inotify watch lost ({why}); polling until it is back")

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None


def parse_registry(raw: bytes, where: str, version: str = "") -> Catalog:
    """Parse the services file. A broken envelope fails the read; bad entries are dropped."""
    services = ServicesFile(where).services(raw, where)
    builder = CatalogBuilder(f"file:{where}")
    for name, instances in services.items():
        if builder.service(name) is None:
            continue
        if instances is None:
            continue
        if not isinstance(instances, list):
            builder.drop(name, "-", "instances must be a list")
            continue
        for i, entry in enumerate(instances):
            if not isinstance(entry, dict):
                builder.drop(name, f"#{i}", "instance must be a mapping")
                continue
            unknown = [label(k) for k in entry if k not in FIELDS]
            if unknown:
                instance = entry.get("id", f"#{i}")
                builder.drop(name, instance, f"unknown field(s): {', '.join(sorted(unknown))}")
                continue
            if "id" not in entry:
                builder.drop(name, f"#{i}", "missing 'id'")
                continue
            builder.add(name, **entry)
    return builder.build(version)


def parse_splits(catalog: Catalog, raw: bytes, where: str) -> Catalog:
    """The overrides file: service -> override; each one's text checked at plan."""
    if not raw:
        return catalog
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        bad = Dropped("-", "split", f"{where}: not a JSON object of service -> override")
        return dataclasses.replace(catalog, dropped=catalog.dropped + (bad,))
    texts = {str(k): json.dumps(v) for k, v in data.items()}
    return dataclasses.replace(catalog, splits=texts)
