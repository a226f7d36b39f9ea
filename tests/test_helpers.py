"""tests/helpers: programs are found next to sys.executable first; a missing component
skips a test on a laptop and fails it under CI=true."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import components, find_nginx, find_tool, poll_until, require_component


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def venv_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin dir that holds sys.executable (as a venv's does), and a PATH without it."""
    bin_dir = tmp_path / "venv" / "bin"
    monkeypatch.setattr(sys, "executable", str(executable(bin_dir / "python")))
    return bin_dir


def test_a_tool_next_to_the_interpreter_wins_over_path(venv_bin, tmp_path, monkeypatch):
    on_path = executable(tmp_path / "path" / "gixy")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_tool("gixy") == str(on_path)
    mine = executable(venv_bin / "gixy")
    assert find_tool("gixy") == str(mine)  # the venv's, as scripts/test installs it


def test_openresty_next_to_the_interpreter_is_found_first_and_needs_no_modules(venv_bin):
    version = "#!/bin/sh\necho 'nginx version: openresty/1.25.3.1' >&2\n"
    openresty = executable(venv_bin / "openresty", version)
    found = find_nginx()
    assert found is not None
    assert (found.path, found.flavor) == (str(openresty), "openresty")
    assert found.load_modules("lua", "stream") == ""


def test_stock_nginx_lists_its_modules_from_its_modules_path(venv_bin, tmp_path):
    modules = tmp_path / "modules"
    version = (
        f"#!/bin/sh\necho 'nginx version: nginx/1.22.1' >&2\necho '--modules-path={modules}' >&2\n"
    )
    executable(venv_bin / "nginx", version)
    found = find_nginx()
    assert found is not None and found.flavor == "nginx"
    assert found.load_modules("lua").splitlines() == [
        f"load_module {modules}/ndk_http_module.so;",
        f"load_module {modules}/ngx_http_lua_module.so;",
    ]
    assert found.missing_modules("stream") == (f"{modules}/ngx_stream_module.so",)


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> str:
    gone = components.Component("frobnicator", "apt-get install frob-server", lambda: None)
    monkeypatch.setitem(components.COMPONENTS, "frob", gone)
    return "frob"


def test_a_missing_component_skips_on_a_developer_machine(missing, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install frob-server"):
        require_component(missing)


def test_a_missing_component_fails_under_ci(missing, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"frobnicator is not installed \(apt-get"):
        require_component(missing)


def test_poll_until_returns_the_value_or_names_what_it_waited_for():
    calls = iter([0, "", "ready"])
    assert poll_until(lambda: next(calls), 5, every=0) == "ready"
    with pytest.raises(AssertionError, match=r"waiting for the moon \(last: 0\)\nlog: x"):
        poll_until(lambda: 0, 0.05, "the moon", every=0.01, detail=lambda: "log: x")


def test_backends_answer_kept_alive_requests_with_nagle_off(backends):
    """Headers and body go out as two writes: with Nagle's algorithm on, every kept-alive
    answer would wait for the peer's delayed ACK (40 ms)."""
    import socket

    import requests

    backend = backends("a")
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(f"http://{backend.address}/x", timeout=10).headers["X-Backend"] == "a"
        open_now = backend.connections()
        assert len(open_now) == 1  # one kept-alive connection served all three
        assert open_now[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_the_fake_source_publishes_scheduled_changes_on_the_fake_clock():
    from tests.helpers.clock import FakeClock
    from tests.helpers.source import FakeSource

    clock = FakeClock()
    source = FakeSource(1, clock=clock)
    source.at(clock.now + 2.5, 2)
    assert not source.wait("0", 1.0) and clock.elapsed == 1.0  # nothing due: the full wait
    assert source.wait("0", 5.0) and clock.elapsed == 2.5  # woken exactly at the change
    assert [i.port for i in source.read().services["app"]] == [2]
