"""deploy/reload.py and deploy/confirm.py: signalling only an nginx master, and waiting for
the generation it serves until a deadline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nginxgen.deploy.confirm import confirm_generation
from nginxgen.deploy.nginx_bin import Binary
from nginxgen.deploy.reload import find_master, read_pid, reload_nginx
from nginxgen.spec import NginxSpec
from tests.helpers import fake_master, free_port
from tests.helpers.clock import FakeClock


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
    clock = FakeClock()
    seen = confirm_generation(f"127.0.0.1:{free_port()}", "0" * 16, timeout=0.3, clock=clock)
    assert not seen.ok and seen.seen is None
    # Polled every 20 ms of the clock until the deadline, and not a poll longer.
    assert 0.3 <= seen.waited < 0.3 + 0.02 + 1e-9 and seen.waited == clock.elapsed
