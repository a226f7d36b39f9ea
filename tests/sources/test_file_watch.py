"""The file registry notices changes through inotify (Linux), never reads a file that is
being written in place, and polls when inotify cannot watch."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from nginxgen.registry import RegistryError
from nginxgen.sources.file import FileSource
from nginxgen.spec import FileRegistry
from nginxgen.util.inotify import DirectoryWatch, InotifyUnavailable

linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") and os.environ.get("CI") != "true",
    reason="inotify is Linux-only",
)
# The content check (the backstop) runs this seldom: a change seen sooner came by inotify.
SLOW_POLL = 30.0


def _text(*ids: str) -> str:
    entries = [{"id": i, "address": f"127.0.0.1:{9000 + n}"} for n, i in enumerate(ids)]
    return yaml.safe_dump({"services": {"app": entries}})


def _source(path: Path, poll: float = SLOW_POLL, **kwargs: object) -> FileSource:
    return FileSource(FileRegistry(kind="file", path=str(path), poll=poll), **kwargs)  # type: ignore[arg-type]


def _ids(src: FileSource) -> list[str]:
    return [i.id for i in src.read().services["app"]]


def _later(seconds: float, fn) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        time.sleep(seconds)
        fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@linux
def test_an_atomic_rename_is_noticed_at_once(tmp_path: Path, caplog) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(_text("a"))
    src = _source(path)
    version = src.read().version

    def rename() -> None:
        (tmp_path / ".services.tmp").write_text(_text("b"))
        os.replace(tmp_path / ".services.tmp", path)

    caplog.set_level(logging.INFO, logger="nginxgen")
    writer = _later(0.2, rename)
    start = time.monotonic()
    assert src.wait(version, timeout=20) is True
    assert time.monotonic() - start < 15  # far below the 30 s poll: inotify woke it
    writer.join()
    assert _ids(src) == ["b"]
    assert "changes noticed through inotify, content checked every 30s" in caplog.text
    src.close()


@linux
def test_an_in_place_write_is_read_only_once_its_writer_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(_text("a"))
    # A writer that pauses keeps the write open for as long as it does not close the file.
    src = _source(path, write_quiet=60.0, write_wait=0.3)
    version = src.read().version
    assert src.wait(version, timeout=0.05) is False  # the watch is on
    with open(path, "w") as fh:
        fh.write("services:\n  app:\n")  # a valid registry with app emptied: must not count
        fh.flush()
        assert src.wait(version, timeout=0.3) is False
        with pytest.raises(RegistryError, match="still being written after 0.3s"):
            src.read()
        fh.write("  - {id: c, address: 127.0.0.1:9002}\n")
    assert src.wait(version, timeout=20) is True
    assert _ids(src) == ["c"]
    src.close()


@linux
def test_a_writer_that_keeps_the_file_open_is_read_once_quiet(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(_text("a"))
    src = _source(path, write_quiet=0.2)
    version = src.read().version
    assert src.wait(version, timeout=0.05) is False
    with open(path, "w") as fh:
        fh.write(_text("d"))
        fh.flush()
        assert src.wait(version, timeout=20) is True  # quiet for 0.2 s, still open
        assert _ids(src) == ["d"]
    src.close()


@linux
def test_a_deleted_file_is_an_outage_not_a_change(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(_text("a"))
    src = _source(path)
    version = src.read().version
    assert src.wait(version, timeout=0.05) is False
    path.unlink()
    assert src.wait(version, timeout=0.3) is False  # not "the registry is now empty"
    with pytest.raises(RegistryError, match="cannot read"):
        src.read()
    (tmp_path / ".services.tmp").write_text(_text("e"))
    os.replace(tmp_path / ".services.tmp", path)
    assert src.wait(version, timeout=20) is True
    assert _ids(src) == ["e"]
    src.close()


@linux
def test_a_symlink_swapped_like_a_configmap_is_noticed(tmp_path: Path) -> None:
    for name, ids in (("v1", ("a",)), ("v2", ("f", "g"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "services.yaml").write_text(_text(*ids))
    (tmp_path / "..data").symlink_to("v1")
    path = tmp_path / "services.yaml"
    path.symlink_to("..data/services.yaml")
    src = _source(path)
    version = src.read().version
    assert src.wait(version, timeout=0.05) is False
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    start = time.monotonic()
    assert src.wait(version, timeout=20) is True
    assert time.monotonic() - start < 15
    assert _ids(src) == ["f", "g"]
    src.close()


@linux
def test_a_busy_neighbour_of_a_symlinked_registry_does_not_block_reads(tmp_path: Path) -> None:
    """Through a symlink any entry of the directory wakes the source, but a file written
    all the time next to it (a log) is not the registry being written."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "services.yaml").write_text(_text("a"))
    (tmp_path / "..data").symlink_to("v1")
    path = tmp_path / "services.yaml"
    path.symlink_to("..data/services.yaml")
    src = _source(path, write_wait=0.5)
    version = src.read().version
    stop = threading.Event()

    def busy() -> None:
        with open(tmp_path / "app.log", "a") as log:
            while not stop.is_set():
                log.write("line\n")
                log.flush()
                time.sleep(0.01)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        time.sleep(0.1)
        assert src.wait(version, timeout=0.3) is False
        for _ in range(5):
            assert _ids(src) == ["a"]  # never "still being written"
    finally:
        stop.set()
        thread.join(5)
        src.close()


def test_without_inotify_it_polls_and_says_so(tmp_path: Path, caplog) -> None:
    def unavailable(directory: Path) -> DirectoryWatch:
        raise InotifyUnavailable("inotify is Linux-only (test)")

    path = tmp_path / "services.yaml"
    path.write_text(_text("a"))
    src = _source(path, poll=0.05, watch=unavailable)
    version = src.read().version
    caplog.set_level(logging.INFO, logger="nginxgen")
    assert src.wait(version, timeout=0.1) is False
    (tmp_path / ".services.tmp").write_text(_text("h"))
    os.replace(tmp_path / ".services.tmp", path)
    assert src.wait(version, timeout=20) is True
    assert _ids(src) == ["h"]
    said = [r for r in caplog.records if "inotify unavailable" in r.getMessage()]
    assert len(said) == 1  # once, not on every wait
    assert said[0].levelno == logging.WARNING
    assert said[0].getMessage() == (
        f"file registry {path}: inotify unavailable (inotify is Linux-only (test)); "
        "polling, content checked every 0.05s"
    )


@linux
def test_a_directory_inotify_cannot_watch_falls_back_to_polling(tmp_path: Path) -> None:
    with pytest.raises(InotifyUnavailable, match="no such file or directory"):
        DirectoryWatch(tmp_path / "missing")
    path = tmp_path / "missing" / "services.yaml"
    src = _source(path, poll=0.05)
    assert src.wait("none", timeout=0.1) is False  # no file yet: nothing to report
    path.parent.mkdir()
    path.write_text(_text("i"))
    assert src.wait("none", timeout=20) is True  # the poll found it
    assert _ids(src) == ["i"]
    src.close()


@linux
def test_inotify_reports_the_events_of_an_atomic_write(tmp_path: Path) -> None:
    watch = DirectoryWatch(tmp_path)
    try:
        (tmp_path / ".tmp").write_text("x")
        os.replace(tmp_path / ".tmp", tmp_path / "services.yaml")
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while "services.yaml" not in seen and time.monotonic() < deadline:
            seen += [e.name for e in watch.read(1.0)]
        assert ".tmp" in seen and "services.yaml" in seen
        assert watch.read(0) == []
    finally:
        watch.close()
    assert watch.read(0) == []  # closed: quiet, not an error
