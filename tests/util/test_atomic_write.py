"""util/atomic_write.py: writing a file in place of the old one, and taking it back.

Filesystems here are real: a bind-mounted file on a small tmpfs that is full, a read-only
mount, device files, symlink chains as Kubernetes mounts a ConfigMap. The mounts need
root (scripts/test runs as root); a fault injected at the OS boundary covers the same
in-place path everywhere.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from nginxgen.util import atomic_write
from nginxgen.util.atomic_write import InstallError, restore_previous, write_atomic

# Bytes a text round-trip would change: CRLF line ends and a Latin-1 comment.
ODD_BYTES = b"# caf\xe9, hand-edited on Windows\r\nevents {}\r\n"


def fill(directory: Path) -> None:
    """Write until the filesystem has no room left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_in_place_install_on_a_full_disk_refuses_and_keeps_the_old_bytes(tmp_path, mounts):
    """A single-file bind mount (rename impossible: EBUSY) whose filesystem is full: the
    old config must stay whole, not be truncated for nginx to fail on at its next start."""
    disk, etc = tmp_path / "disk", tmp_path / "etc"
    disk.mkdir()
    etc.mkdir()
    mounts("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk))
    old = b"# old\n" + b"a" * 20_000 + b"\n"
    (disk / "nginx.conf").write_bytes(old)
    (etc / "nginx.conf").write_bytes(b"")
    mounts("--bind", str(disk / "nginx.conf"), str(etc / "nginx.conf"))
    fill(disk)
    new = "# new\n" + "b" * 100_000 + "\n"
    with pytest.raises(InstallError) as caught:
        write_atomic(etc / "nginx.conf", new)
    assert f"cannot write {etc / 'nginx.conf'} in place" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert (etc / "nginx.conf").read_bytes() == old
    # With room again, the same write goes in (in place) and the old bytes are kept aside.
    (disk / "filler").unlink()
    written = write_atomic(etc / "nginx.conf", new)
    assert written.in_place and written.previous == old
    assert (etc / "nginx.conf").read_text() == new
    assert restore_previous(written) and (etc / "nginx.conf").read_bytes() == old


def test_in_place_write_that_fails_anyway_puts_the_old_bytes_back(tmp_path, monkeypatch):
    """The space check passed, then the disk said no at fsync (delayed allocation, NFS):
    injected at the OS boundary, where a real filesystem reports it."""
    target = tmp_path / "nginx.conf"
    target.write_bytes(ODD_BYTES)
    real_replace, real_fsync = os.replace, os.fsync
    failed: list[int] = []

    def busy(src: str, dst: str) -> None:  # what renaming onto a bind mount answers
        if Path(dst) == target:
            raise OSError(errno.EBUSY, "Device or resource busy")
        real_replace(src, dst)

    def fsync(fd: int) -> None:
        if not failed and os.fstat(fd).st_ino == target.stat().st_ino:
            failed.append(fd)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(atomic_write.os, "replace", busy)
    monkeypatch.setattr(atomic_write.os, "fsync", fsync)
    with pytest.raises(InstallError, match="no space left on device; the previous content is"):
        write_atomic(target, "new config\n" * 100)
    assert failed and target.read_bytes() == ODD_BYTES


# --- what a write refuses, and what it follows -----------------------------------------


def test_a_symlink_is_written_through_to_its_target_as_a_configmap_needs(tmp_path):
    # Kubernetes: nginx.conf -> ..data/nginx.conf, ..data -> ..2026_01_01_00_00_00.1/
    real = tmp_path / "..2026_01_01_00_00_00.1"
    real.mkdir()
    (real / "nginx.conf").write_text("old\n")
    (tmp_path / "..data").symlink_to(real.name)
    link = tmp_path / "nginx.conf"
    link.symlink_to("..data/nginx.conf")
    written = write_atomic(link, "new\n")
    assert link.is_symlink() and os.readlink(link) == "..data/nginx.conf"
    assert (real / "nginx.conf").read_text() == "new\n"
    assert written.path == str(real / "nginx.conf") and written.backup == written.path + ".bak"
    assert Path(written.backup).read_text() == "old\n"
    restore_previous(written)
    assert link.is_symlink() and (real / "nginx.conf").read_text() == "old\n"


def test_device_files_fifos_and_directories_are_refused_not_replaced(tmp_path):
    # A device node of our own (what /dev/null is), never the system's: a regression
    # here must not clobber the machine's /dev/null.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = [
        (fifo, f"{fifo} is a FIFO, not a regular file; refusing to replace it"),
        (tmp_path, f"{tmp_path} is a directory; give the path of a file"),
    ]
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        link = tmp_path / "null-link"
        link.symlink_to(null)
        cases += [
            (null, f"{null} is a character device, not a regular file; refusing to replace it"),
            (link, f"{link} (-> {null}) is a character device"),
        ]
    for path, message in cases:
        with pytest.raises(InstallError) as caught:
            write_atomic(path, "x\n")
        assert message in str(caught.value)
    assert fifo.is_fifo() and not list(tmp_path.glob("*.bak"))
    if os.geteuid() == 0:
        assert (tmp_path / "null").is_char_device() and (tmp_path / "null-link").is_symlink()


def test_a_missing_directory_is_an_error_not_created(tmp_path):
    with pytest.raises(InstallError) as caught:
        write_atomic(tmp_path / "typo" / "nginx.conf", "x\n")
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'typo' / 'nginx.conf'}: directory {tmp_path / 'typo'} "
        "does not exist (create it first)"
    )
    assert not (tmp_path / "typo").exists()


def test_an_unwritable_place_is_one_sentence(tmp_path, mounts):
    (tmp_path / "ro").mkdir()
    mounts("-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(tmp_path / "ro"))
    with pytest.raises(InstallError) as caught:
        write_atomic(tmp_path / "ro" / "nginx.conf", "x\n")
    assert (
        str(caught.value) == f"cannot write {tmp_path / 'ro' / 'nginx.conf'}: read-only file system"
    )


# --- restore --------------------------------------------------------------------------


def test_restore_puts_back_exactly_the_previous_bytes(tmp_path):
    target = tmp_path / "nginx.conf"
    target.write_bytes(ODD_BYTES)
    written = write_atomic(target, "new\n")
    assert Path(str(written.backup)).read_bytes() == ODD_BYTES
    assert restore_previous(written) == f"restored the previous {target}"
    assert target.read_bytes() == ODD_BYTES
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_restore_removes_a_file_that_was_not_there_before(tmp_path):
    target = tmp_path / "nginx.conf"
    written = write_atomic(target, "new\n")
    assert written.previous is None and written.backup is None
    assert "there was no file before" in restore_previous(written)
    assert not target.exists()
