"""The spine end to end: registry → render → real nginx → real backends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from tests.helpers import free_port, who_answers, write_spec


def render(spec: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(out)],
        capture_output=True,
        text=True,
    )


def test_traffic_follows_weights_fails_over_and_answers_503(workdir, backends, nginx_runner):
    a, b = backends("a"), backends("b")
    port = free_port()
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": f"127.0.0.1:{port}", "pid": "nginx.pid"},
            "defaults": {"failover": {"tries": 2}, "health": {"max_fails": 1}},
            "routes": [
                {"path": "/api/", "service": "app"},
                {"path": "/empty/", "service": "nobody"},
            ],
        },
        {
            "app": [
                {"id": "a", "address": a.address, "weight": 3},
                {"id": "b", "address": b.address, "weight": 1},
            ],
            "nobody": [{"id": "gone", "address": "127.0.0.1:1", "state": "down"}],
        },
    )
    conf = workdir / "nginx.conf"
    result = render(spec, conf)
    assert result.returncode == 0, result.stderr
    nginx = nginx_runner(conf, workdir / "nginx.pid", port)

    seen = who_answers(f"http://127.0.0.1:{port}/api/x", 200)
    assert set(seen) == {"a", "b"}, seen
    assert 2.2 < seen["a"] / seen["b"] < 4.0, seen  # weight 3:1, smooth round robin

    # The backend sees the gateway's view of the client, not what the client claims.
    requests.get(f"http://127.0.0.1:{port}/api/h", headers={"X-Forwarded-For": "6.6.6.6"})
    last = (a.requests + b.requests)[-1]
    assert last["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert last["headers"]["X-Real-IP"] == "127.0.0.1"

    b.stop()
    statuses = [requests.get(f"http://127.0.0.1:{port}/api/f", timeout=5) for _ in range(20)]
    assert [r.status_code for r in statuses] == [200] * 20
    assert all(r.headers["X-Backend"] == "a" for r in statuses)

    r = requests.get(f"http://127.0.0.1:{port}/empty/thing", timeout=5)
    assert r.status_code == 503
    assert r.json() == {"error": "service unavailable", "service": "nobody"}
    assert r.headers["Content-Type"] == "application/json"

    assert requests.get(f"http://127.0.0.1:{port}/elsewhere", timeout=5).status_code == 404
    assert "emerg" not in nginx.errors()


def test_invalid_config_is_never_written(workdir):
    """A config nginx -t refuses (here: a worker user that does not exist) is not written."""
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": free_port(), "user": "no-such-user-x"},
            "routes": [{"path": "/", "service": "x"}],
        },
        {"x": [{"id": "x1", "address": "127.0.0.1:9"}]},
    )
    out = workdir / "nginx.conf"
    out.write_text("# the running config\n")
    result = render(spec, out)
    assert result.returncode == 1
    assert 'getpwnam("no-such-user-x")' in result.stderr
    assert "nothing written" in result.stderr
    assert "user no-such-user-x;" in result.stderr  # the offending line is shown
    assert out.read_text() == "# the running config\n"


def test_unresolvable_instance_is_dropped_and_the_rest_still_serves(workdir, backends):
    a = backends("a")
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": free_port(), "endpoints": "reload"},
            "routes": [{"path": "/", "service": "x"}],
        },
        {"x": [{"id": "ok", "address": a.address}, {"id": "stale", "address": "gone.invalid:80"}]},
    )
    out = workdir / "nginx.conf"
    result = render(spec, out)
    assert result.returncode == 0, result.stderr
    assert "'stale': host 'gone.invalid' does not resolve" in result.stderr
    assert a.address in out.read_text() and "gone.invalid" not in out.read_text()
