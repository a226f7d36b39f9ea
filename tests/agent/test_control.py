"""The control endpoint's parts in one process: the token file, the desk that takes
restarts (one at a time, rate limited on a clock the test drives) and the HTTP server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nginxgen.agent.control import ControlError, ControlServer, TokenFile, read_token
from nginxgen.agent.restart import OK, RestartDesk, RestartLimit
from tests.helpers import ManualClock as Clock
from tests.helpers.agent import TOKEN, Control, token_file


class Wall:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.clock.now)


# --- the token file --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        (None, 0o600, "no such file"),
        ("", 0o600, "is empty"),
        ("\n  \n", 0o600, "is empty"),
        (TOKEN, 0o644, "is accessible by group or others (mode 0644)"),
        (TOKEN, 0o640, "is accessible by group or others (mode 0640)"),
        (TOKEN, 0o604, "(mode 0604); like ssh with a private key"),
        (TOKEN, 0o620, "(mode 0620)"),
        ("short", 0o600, "the token has 5 characters; use at least 16"),
        ("two words but long enough", 0o600, "one word of printable ASCII"),
        (TOKEN + "\n" + TOKEN, 0o600, "one word of printable ASCII"),
    ],
)
def test_a_token_file_is_refused_like_ssh_refuses_a_key(tmp_path, content, mode, message):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
        path.chmod(mode)
    with pytest.raises(ControlError) as caught:
        read_token(str(path))
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"--control-token-file {path}: ")
    assert TOKEN not in str(caught.value)


def test_a_directory_is_not_a_token_file(tmp_path):
    with pytest.raises(ControlError, match="is not a regular file"):
        read_token(str(tmp_path))


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_token_file_is_read_without_its_newline(tmp_path, mode):
    assert read_token(str(token_file(tmp_path, mode=mode))) == TOKEN.encode()


def test_the_token_file_can_be_rotated_and_a_bad_rotation_keeps_the_old(tmp_path):
    lines: list[str] = []
    path = token_file(tmp_path)
    tokens = TokenFile(str(path), lines.append)
    assert tokens.matches(TOKEN.encode())
    new = "rotated-" + "f" * 24
    path.write_text(new + "\n")  # same mode, new content
    os.utime(path, ns=(1, 1))
    assert tokens.matches(new.encode()) and not tokens.matches(TOKEN.encode())
    path.chmod(0o644)  # a mistake: the agent keeps the token it had
    assert tokens.matches(new.encode())
    assert any("accessible by group or others" in line for line in lines)
    assert any("keeping the token read before" in line for line in lines)
    assert not any(TOKEN in line or new in line for line in lines)


# --- the rate limit and the desk -------------------------------------------------------


def test_the_limit_is_a_sliding_window():
    clock = Clock()
    limit = RestartLimit(3, 600.0, clock)
    assert [limit.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.take() == 600.0
    clock.now += 100
    assert limit.take() == 500.0
    clock.now += 499.5
    assert limit.take() == 0.5
    clock.now += 0.5  # all three are out of the window now
    assert [limit.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.retry_after() == 600.0
    assert limit.to_json()["refused"] == 3


def test_the_4th_restart_in_the_window_gets_429_until_the_window_slides():
    clock = Clock()
    lines: list[str] = []
    desk = RestartDesk(RestartLimit(3, 600.0, clock), lines.append, clock=clock, wall=Wall(clock))
    for _ in range(3):
        answer = desk.request("10.0.0.9")
        assert answer.status == 202
        job = desk.take()
        assert job is not None and job.id == answer.body["restart"]
        desk.finish(OK)
        clock.now += 60
    refused = desk.request("10.0.0.9")
    assert refused.status == 429
    assert dict(refused.headers) == {"Retry-After": "420"}  # 600 - 3 * 60
    status = desk.status()
    assert status["limit"] == {
        "limit": 3,
        "window_seconds": 600.0,
        "used": 3,
        "limited": True,
        "retry_after_seconds": 420,
        "refused": 1,
    }
    assert status["restarts"] == 3 and status["restart"] is None
    assert "the limit of 3 per 10m is reached; the next one is allowed in 420s" in lines[-1]
    assert desk.take() is None  # the refusal started nothing

    clock.now += 419
    assert desk.request("10.0.0.9").headers == (("Retry-After", "1"),)
    clock.now += 1  # the first restart leaves the window
    assert desk.request("10.0.0.9").status == 202
    assert desk.status()["limit"]["used"] == 3


def test_one_restart_at_a_time_and_none_while_stopping():
    clock = Clock()
    desk = RestartDesk(RestartLimit(3, 600.0, clock), lambda line: None, clock=clock)
    first = desk.request("a")
    busy = desk.request("b")
    assert (first.status, busy.status) == (202, 409)
    assert busy.body["restart"] == first.body["restart"]
    assert desk.status()["limit"]["used"] == 1  # a 409 costs nothing
    desk.take()
    desk.step("deregistered")
    clock.now += 2.5
    desk.step("unlisted")
    desk.finish("aborted", "etcd down")
    last = desk.status()["last_restart"]
    assert (last["result"], last["reason"]) == ("aborted", "etcd down")
    assert [(s["step"], s["after_seconds"]) for s in last["steps"]] == [
        ("deregistered", 0.0),
        ("unlisted", 2.5),
    ]
    assert desk.status()["restarts"] == 0  # only a restart that came back counts
    desk.stopping()
    assert desk.request("c").status == 503
    assert desk.status()["limit"]["used"] == 1


# --- the HTTP server -------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Control, RestartDesk, list[str]]]:
    clock = Clock()
    lines: list[str] = []
    desk = RestartDesk(RestartLimit(3, 600.0, clock), lines.append, clock=clock)
    tokens = TokenFile(str(token_file(tmp_path)), lines.append)
    server = ControlServer("127.0.0.1", 0, tokens, desk, lines.append)
    yield Control(server.server.server_address[1]), desk, lines
    server.close()


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("POST", "/restart", None, 401),
        ("POST", "/restart", "", 401),
        ("POST", "/restart", "x" * len(TOKEN), 401),
        ("POST", "/restart", TOKEN + "x", 401),
        ("GET", "/status", "nope-nope-nope-nope", 401),
        ("POST", "/", TOKEN, 404),
        ("POST", "/restart/now", TOKEN, 404),
        ("POST", "/RESTART", TOKEN, 404),
        ("GET", "/restart", TOKEN, 405),
        ("PUT", "/restart", TOKEN, 405),
        ("POST", "/status", TOKEN, 405),
        ("DELETE", "/status", None, 405),
    ],
)
def test_refusals_change_nothing(served, method, path, token, status):
    control, desk, lines = served
    before = desk.status()
    answer = control.call(method, path, token=token)
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json" and "error" in answer.json()
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="nginxgen-agent"'
    if status == 405:
        assert answer.headers["Allow"] in ("GET", "POST")
    assert desk.status() == before and desk.take() is None
    assert not any(TOKEN in line for line in lines)


def test_the_right_token_restarts_and_reads_status(served):
    control, desk, lines = served
    answer = control.restart()
    assert answer.status_code == 202
    assert answer.headers["Cache-Control"] == "no-store"
    assert desk.take() is not None
    status = control.status()
    assert status["restart"]["id"] == answer.json()["restart"]
    assert (
        control.call("POST", "/restart", token=None, Authorization=f"bearer {TOKEN}").status_code
        == 409
    )
    assert not any(TOKEN in line for line in lines)


def test_a_taken_port_is_a_clear_error(served, tmp_path):
    control, desk, _ = served
    port = int(control.url.rsplit(":", 1)[1])
    tokens = TokenFile(str(token_file(tmp_path)), print)
    with pytest.raises(ControlError, match=rf"--control-listen 127.0.0.1:{port}: cannot listen"):
        ControlServer("127.0.0.1", port, tokens, desk, print)


def raw(control: Control, request: bytes) -> tuple[int, dict]:
    """Send bytes as they are; (status, JSON body) of the answer."""
    import json
    import socket

    port = int(control.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head, head
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "body_headers",
    [
        f"Content-Length: {100 * 1024 * 1024}",  # declared, never sent
        "Content-Length: 65537",
        "Content-Length: -1",
        "Content-Length: lots",
        "Transfer-Encoding: chunked",
    ],
)
def test_a_body_too_large_or_of_unknown_size_is_refused_with_413(served, body_headers):
    control, desk, lines = served
    before = desk.status()
    request = (
        f"POST /restart HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"{body_headers}\r\n\r\n"
    ).encode() + b"x" * 1000
    status, body = raw(control, request)
    assert status == 413 and "up to 65536 bytes" in body["error"]
    assert desk.status() == before and desk.take() is None


def test_a_small_body_is_read_and_ignored(served):
    control, desk, _ = served
    answer = control.http.post(
        control.url + "/restart",
        data=b'{"reason": "pseudo-dead"}' * 100,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 202 and desk.take() is not None


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"TRACE /restart HTTP/1.1\r\nHost: a\r\n\r\n", 501),
        (b"GET /status HTTP/1.1\r\nX-A: " + b"a" * 70000 + b"\r\n\r\n", 431),
        (b"GET /" + b"s" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / x HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_what_http_server_refuses_itself_is_answered_in_json(served, request_line, status):
    control, desk, _ = served
    before = desk.status()
    assert raw(control, request_line)[0] == status
    assert desk.status() == before


def test_concurrent_restarts_accept_exactly_one(served):
    import threading
    from collections import Counter

    control, desk, _ = served
    start, answers = threading.Barrier(16), Counter[int]()
    lock = threading.Lock()

    def ask() -> None:
        client = Control(int(control.url.rsplit(":", 1)[1]))
        start.wait()
        status = client.restart().status_code
        with lock:
            answers[status] += 1

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {202: 1, 409: 15}
    assert desk.status()["limit"]["used"] == 1
