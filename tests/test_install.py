"""install.py: writing a config in place of the old one, taking it back, reloading nginx.

Filesystems here are real: a bind-mounted file on a small tmpfs that is full, a read-only
mount, device files, symlink chains as Kubernetes mounts a ConfigMap. The mounts need
root (scripts/test runs as root); a fault injected at the OS boundary covers the same
in-place path everywhere.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nginxgen.deploy.confirm import confirm_generation
from nginxgen.deploy.nginx_bin import Binary
from nginxgen.deploy.reload import find_master, read_pid, reload_nginx
from nginxgen.spec import NginxSpec
from nginxgen.util import atomic_write
from nginxgen.util.atomic_write import InstallError, restore_previous, write_atomic
from tests.helpers import free_port, skip_or_fail

# Bytes a text round-trip would change: CRLF line ends and a Latin-1 comment.
ODD_BYTES = b"# caf\xe9, hand-edited on Windows\r\nevents {}\r\n"


# --- mounts ---------------------------------------------------------------------------


@pytest.fixture
def mounts() -> Iterator[Callable[..., None]]:
    """mounts(*mount_args): run `mount` as root; everything is unmounted afterwards."""
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root (scripts/test runs as root)")
    done: list[str] = []

    def mount(*args: str) -> None:
        out = subprocess.run(["mount", *args], capture_output=True, text=True)
        if out.returncode != 0:
            skip_or_fail(f"cannot mount here ({out.stderr.strip()}): no CAP_SYS_ADMIN?")
        done.append(args[-1])

    yield mount
    for point in reversed(done):
        subprocess.run(["umount", point], check=True)


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


# --- reload ---------------------------------------------------------------------------


def test_reload_without_a_master_says_nginx_is_not_running(tmp_path):
    nginx = NginxSpec(pid=str(tmp_path / "nginx.pid"))
    result = reload_nginx(nginx, None)
    assert not result.ok and not result.running and "not running" in result.message
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "nginx.pid").write_text(f"{dead.pid}\n")
    assert read_pid(tmp_path / "nginx.pid") == dead.pid
    gone = reload_nginx(nginx, None)
    assert not gone.running and "is gone" in gone.message


def fake_master(title: str, *, exit_on_hup: bool = True) -> subprocess.Popen[bytes]:
    """A process whose command line reads like `title` (as nginx sets its own title);
    it exits 7 on SIGHUP, or ignores it."""
    on_hup = "lambda *a: sys.exit(7)" if exit_on_hup else "signal.SIG_IGN"
    code = (
        "import signal,sys,time\n"
        f"signal.signal(signal.SIGHUP, {on_hup})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    )
    child = subprocess.Popen(
        ["bash", "-c", f'exec -a "{title}" "$0" -c "$1"', sys.executable, code],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


def test_reload_signals_the_pid_file_master(tmp_path):
    child = fake_master("nginx: master process /usr/sbin/nginx")
    (tmp_path / "nginx.pid").write_text(str(child.pid))
    result = reload_nginx(NginxSpec(pid=str(tmp_path / "nginx.pid")), None)
    assert result.ok and f"SIGHUP to nginx master {child.pid}" in result.message
    assert child.wait(10) == 7


@pytest.mark.parametrize("title", ["python3 my_server.py", "nginx: worker process"])
def test_a_pid_that_is_not_an_nginx_master_is_never_signalled(tmp_path, title):
    """The pid file outlived nginx and the number now belongs to someone else."""
    stranger = fake_master(title)
    try:
        (tmp_path / "nginx.pid").write_text(f"{stranger.pid}\n")
        for mode in ("signal", "binary"):
            nginx = NginxSpec(pid=str(tmp_path / "nginx.pid"), reload=mode)
            result = reload_nginx(nginx, Binary("/bin/false", "nginx"))
            assert not result.ok and not result.running
            pid_file = tmp_path / "nginx.pid"
            assert result.message.startswith(
                f"nginx is not running (pid {stranger.pid} from {pid_file} is `{title} -c "
            ), result.message
            assert result.message.endswith(", not an nginx master)"), result.message
        assert stranger.poll() is None  # alive, never signalled
        assert find_master(tmp_path / "nginx.pid")[0] is None
    finally:
        stranger.kill()
        stranger.wait()


def test_reload_command_wins_and_its_failure_is_reported(tmp_path):
    ok = NginxSpec(pid=str(tmp_path / "p"), reload_command="true")
    assert reload_nginx(ok, None).ok
    bad = NginxSpec(reload_command=[sys.executable, "-c", "import sys; sys.exit('no master')"])
    result = reload_nginx(bad, None)
    assert not result.ok and "no master" in result.message


def test_confirm_gives_up_at_the_deadline_when_nothing_answers():
    seen = confirm_generation(f"127.0.0.1:{free_port()}", "0" * 16, timeout=0.3)
    assert not seen.ok and seen.seen is None and seen.waited >= 0.3
