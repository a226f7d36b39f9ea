from __future__ import annotations

import os
import subprocess
import sys

from nginxgen.install import (
    confirm_generation,
    read_pid,
    reload_nginx,
    restore_backup,
    write_atomic,
)
from nginxgen.spec import NginxSpec
from tests.conftest import free_port


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


def test_reload_signals_the_pid_file_master(tmp_path):
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal,sys,time\n"
            "signal.signal(signal.SIGHUP, lambda *a: sys.exit(7))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    (tmp_path / "nginx.pid").write_text(str(child.pid))
    result = reload_nginx(NginxSpec(pid=str(tmp_path / "nginx.pid")), None)
    assert result.ok and f"SIGHUP to nginx master {child.pid}" in result.message
    assert child.wait(10) == 7


def test_reload_command_wins_and_its_failure_is_reported(tmp_path):
    ok = NginxSpec(pid=str(tmp_path / "p"), reload_command="true")
    assert reload_nginx(ok, None).ok
    bad = NginxSpec(reload_command=[sys.executable, "-c", "import sys; sys.exit('no master')"])
    result = reload_nginx(bad, None)
    assert not result.ok and "no master" in result.message


def test_confirm_gives_up_at_the_deadline_when_nothing_answers():
    seen = confirm_generation(f"127.0.0.1:{free_port()}", "0" * 16, timeout=0.3)
    assert not seen.ok and seen.seen is None and seen.waited >= 0.3


def test_restore_backup_puts_the_previous_file_back(tmp_path):
    target = tmp_path / "nginx.conf"
    write_atomic(target, "old\n")
    written = write_atomic(target, "new\n")
    assert written.backup and restore_backup(written)
    assert target.read_text() == "old\n"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
