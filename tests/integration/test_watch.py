"""`nginxgen watch` against a real nginx, real backends and the file registry."""

from __future__ import annotations

import functools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    REPO,
    Backend,
    Client,
    WatchedGateway,
    free_port,
    run_cli,
    who_answers,
    write_spec,
)
from tests.helpers import poll_until as eventually


@pytest.fixture
def watched_gateway(watched_gateway):
    """These tests are about the reload path (they count reloads or read server lines):
    endpoints: reload. tests/integration/test_dynamic_endpoints.py has the push path."""
    return functools.partial(watched_gateway, endpoints="reload")


def write_registry(directory: Path, services: dict[str, Any]) -> None:
    """Replace services.yaml atomically, as a registry agent would."""
    tmp = directory / ".services.yaml.tmp"
    tmp.write_text(yaml.safe_dump({"services": services}))
    os.replace(tmp, directory / "services.yaml")


def app(*members: tuple[Backend, int] | Backend, state: str = "up") -> dict[str, Any]:
    out = []
    for m in members:
        backend, weight = m if isinstance(m, tuple) else (m, 1)
        out.append(
            {"id": backend.name, "address": backend.address, "weight": weight, "state": state}
        )
    return {"app": out}


@contextmanager
def listening_on_a_taken_port(gw: WatchedGateway) -> Iterator[None]:
    """Point the spec's listen at a port another socket holds: nginx -t passes, but the
    master cannot bind it on reload and keeps the old config (a reload that does not
    serve)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spec = yaml.safe_load(gw.spec.read_text())
        spec["nginx"]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        gw.spec.write_text(yaml.safe_dump(spec, sort_keys=False))
        yield


def test_traffic_follows_ten_registry_changes_under_load_without_a_failed_request(
    watched_gateway, backends
):
    a, b, c = backends("a"), backends("b"), backends("c")
    # Ten moves in about 20 s turn each backend in and out more often than flap damping
    # allows by default (it would pin them out); this test is about following every move.
    gw = watched_gateway(app(a), watch={"flap": "off"})
    assert gw.serves_only("a")
    client = Client(gw.url)
    client.start()
    try:
        plan = [b, c, a, b, a, c, b, c, a, b]
        for i, target in enumerate(plan):
            # Half the moves go through a shared step, as a rolling deploy would.
            if i % 2 == 0:
                reloads = gw.metric("nginxgen_reloads_total")
                write_registry(gw.dir, app((target, 5), (a if target is not a else b, 1)))
                eventually(lambda r=reloads: gw.metric("nginxgen_reloads_total") > r, 20, "reload")
            write_registry(gw.dir, app(target))
            eventually(lambda t=target: gw.serves_only(t.name), 20, f"traffic on {target.name}")
            eventually(lambda i=i: gw.healthz()[0] == 200, 10, "healthy")
    finally:
        client.stop()
    assert client.failures == [], client.failures[:5]
    assert len(client.results) > 50
    assert {"a", "b", "c"} <= set(client.results)
    assert gw.metric("nginxgen_reload_failures_total") == 0
    assert gw.metric("nginxgen_rollbacks_total") == 0
    assert "reloaded: " in gw.logs()
    assert gw.stop_watch() == 0


def test_invalid_config_is_not_installed_and_health_says_why(watched_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(app(a))
    good = gw.conf.read_text()
    # The operator edits the spec into something nginx refuses, then sends SIGHUP.
    spec = yaml.safe_load(gw.spec.read_text())
    spec["nginx"]["client_max_body_size"] = "1x"
    gw.spec.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    eventually(lambda: gw.metric("nginxgen_validation_failures_total") >= 1, 20, "refusal")
    code, reason = gw.healthz()
    assert code == 503 and "validation" in reason and "client_max_body_size" in reason, reason
    assert gw.conf.read_text() == good
    assert gw.serves_only("a")
    # A registry change still cannot install the broken spec; nginx keeps serving.
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.metric("nginxgen_validation_failures_total") >= 2, 20, "refusal")
    assert gw.conf.read_text() == good and gw.serves_only("a")
    # Fixed spec + SIGHUP: the pending registry change goes through.
    spec["nginx"]["client_max_body_size"] = "2m"
    gw.spec.write_text(yaml.safe_dump(spec, sort_keys=False))
    gw.proc.send_signal(signal.SIGHUP)
    eventually(lambda: gw.serves_only("b"), 20, "traffic on b")
    eventually(lambda: gw.healthz()[0] == 200, 10, "healthy again")
    assert gw.metric('nginxgen_reloads_total{reason="spec"}') == 1
    assert "(spec reloaded)" in gw.logs()
    assert gw.stop_watch() == 0


def test_reload_that_does_not_serve_is_rolled_back(watched_gateway, backends):
    a = backends("a")
    gw = watched_gateway(app(a), watch={"confirm_timeout": "2s"})
    good = gw.conf.read_text()
    with listening_on_a_taken_port(gw):
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        eventually(lambda: gw.metric("nginxgen_rollbacks_total") == 1, 30, "rollback")
    assert gw.metric("nginxgen_reload_failures_total") >= 1
    code, reason = gw.healthz()
    assert code == 503 and "did not serve generation" in reason, reason
    assert gw.conf.read_text() == good
    assert gw.serves_only("a")
    assert gw.stop_watch() == 0


def test_registry_outage_keeps_traffic_goes_stale_and_catches_up(watched_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(app(a), watch={"resync": "500ms"})
    registry = gw.dir / "services.yaml"
    client = Client(gw.url)
    client.start()
    try:
        registry.unlink()  # the registry is gone: no change signal, only the resync notices
        eventually(lambda: gw.healthz()[0] == 503, 20, "stale health")
        assert "stale" in gw.healthz()[1]
        registry.write_text("services: [broken")  # then it answers garbage
        eventually(lambda: gw.metric("nginxgen_registry_errors_total") >= 3, 20, "retries")
        assert gw.metric("nginxgen_registry_stale") == 1
        assert gw.proc is not None and gw.proc.poll() is None
        assert gw.serves_only("a")
        write_registry(gw.dir, app(b))  # back, with news
        eventually(lambda: gw.serves_only("b"), 20, "traffic on b")
        eventually(lambda: gw.healthz()[0] == 200, 10, "healthy")
        assert gw.metric("nginxgen_registry_stale") == 0
    finally:
        client.stop()
    assert client.failures == []
    assert gw.stop_watch() == 0


def test_hundred_changes_inside_the_quiet_period_give_one_reload(watched_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(app(a), watch={"debounce": {"min": "1500ms", "max": "30s"}})
    before = gw.metric("nginxgen_reloads_total")
    for weight in range(1, 101):
        write_registry(gw.dir, app(a, (b, weight)))
        time.sleep(0.01)
    eventually(lambda: gw.metric("nginxgen_reloads_total") > before, 30, "the reload")
    time.sleep(2.0)  # a second reload would come within one more quiet period
    assert gw.metric("nginxgen_reloads_total") == before + 1
    assert "weight=100" in gw.conf.read_text()
    assert gw.stop_watch() == 0


def test_sudden_emptying_is_held_until_confirmed_but_drained_removal_is_not(
    watched_gateway, backends
):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(
        app(a, b), watch={"guard": {"confirm_reads": 3, "confirm_period": "2s"}, "resync": "1s"}
    )
    write_registry(gw.dir, {"app": []})  # a registry hiccup answers "nobody"
    eventually(lambda: gw.metric("nginxgen_removals_held") == 2, 20, "hold")
    code, text = gw.healthz()
    assert code == 200 and "holding" in text and "'app' emptied" in text, text
    assert set(who_answers(gw.url, 10, fresh=True)) == {"a", "b"}
    # Still empty on the following reads: it was real; routes now answer 503.
    eventually(
        lambda: who_answers(gw.url, 2, fresh=True) == {"HTTP 503": 2}, 20, "503 after confirmation"
    )
    # Drain first, then remove: deliberate, applied at once.
    write_registry(gw.dir, app(a, b))
    eventually(lambda: set(who_answers(gw.url, 10, fresh=True)) == {"a", "b"}, 20, "both back")
    write_registry(gw.dir, {"app": [*app(a)["app"], *app(b, state="draining")["app"]]})
    eventually(lambda: gw.serves_only("a"), 20, "b drained")
    write_registry(gw.dir, app(a))
    eventually(lambda: gw.metric("nginxgen_service_instances") == 1, 20, "b removed")
    assert gw.metric("nginxgen_removals_held") == 0
    assert gw.stop_watch() == 0


def test_sigkill_during_install_leaves_the_old_or_the_new_file(workdir):
    old, new = "# old\n" + "a" * 2_000_000 + "\n", "# new\n" + "b" * 3_000_000 + "\n"
    target = workdir / "nginx.conf"
    target.write_text(old)
    code = (
        "import sys\n"
        "from nginxgen.install import write_atomic\n"
        f"texts = [open({str(workdir / 'old')!r}).read(),"
        f" open({str(workdir / 'new')!r}).read()]\n"
        "i = 0\n"
        "while True:\n"
        f"    write_atomic({str(target)!r}, texts[i % 2]); i += 1\n"
    )
    (workdir / "old").write_text(old)
    (workdir / "new").write_text(new)
    rng = random.Random(4)
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        time.sleep(0.3 + rng.random() * 0.4)
        proc.kill()
        proc.wait(10)
        assert target.read_text() in (old, new)


def test_once_and_dry_run_exit_codes(workdir, backends):
    a = backends("a")
    spec = write_spec(
        workdir,
        {
            # the dry run's diff shows server lines: endpoints: reload
            "nginx": {
                "flavor": "nginx",
                "listen": free_port(),
                "output": "nginx.conf",
                "endpoints": "reload",
            },
            "routes": [{"path": "/", "service": "app"}],
        },
        app(a),
    )
    conf = workdir / "nginx.conf"
    dry = run_cli("watch", "-c", str(spec), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"+        server {a.address} weight=1" in dry.stdout
    assert not conf.exists()
    assert run_cli("watch", "-c", str(spec), "--once").returncode == 0
    installed = conf.read_text()
    assert run_cli("watch", "-c", str(spec), "--dry-run").stdout.strip() == ""

    data = yaml.safe_load(spec.read_text())
    data["nginx"]["client_max_body_size"] = "1x"
    spec.write_text(yaml.safe_dump(data))
    bad = run_cli("watch", "-c", str(spec), "--once")
    assert bad.returncode == 1
    assert "client_max_body_size" in bad.stderr and "Traceback" not in bad.stderr
    dry_bad = run_cli("watch", "-c", str(spec), "--dry-run")
    assert dry_bad.returncode == 1
    assert "-    client_max_body_size 1m;" in dry_bad.stdout
    assert conf.read_text() == installed

    missing = run_cli("watch", "-c", str(workdir / "nope.yaml"), "--once")
    assert missing.returncode == 2 and "spec file not found" in missing.stderr
    usage = run_cli("watch", "-c", str(spec), "--log-format", "xml")
    assert usage.returncode == 2
    (workdir / "services.yaml").write_text("services: [")
    data["nginx"]["client_max_body_size"] = "1m"
    spec.write_text(yaml.safe_dump(data))
    broken = run_cli("watch", "-c", str(spec), "--once", "--log-format", "json")
    assert broken.returncode == 1
    assert '"level": "error"' in broken.stderr and "not valid YAML" in broken.stderr


def test_sigkill_of_the_watch_loop_at_random_points_never_tears_nginx_conf(workdir):
    """The real loop flipping between two registry states, killed at random moments."""
    services = {
        f"s{i}": [{"id": f"s{i}-1", "address": f"127.0.0.1:{10000 + i}"}] for i in range(300)
    }
    flipped = {k: [{**v[0], "weight": 2}] for k, v in services.items()}
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": free_port(), "output": "nginx.conf"},
            "watch": {"listen": "off", "debounce": {"min": "0s", "max": "0s"}},
            "routes": [{"path": f"/s{i}/", "service": f"s{i}"} for i in range(300)],
        },
        services,
    )
    data = yaml.safe_load(spec.read_text())
    data["registry"]["poll"] = "10ms"
    spec.write_text(yaml.safe_dump(data))
    texts = []
    for state in (flipped, services):  # ends on `services`, the first state of each round
        write_registry(workdir, state)
        assert run_cli("watch", "-c", str(spec), "--once").returncode == 0
        texts.append((workdir / "nginx.conf").read_text())
    assert texts[0] != texts[1]
    rng = random.Random(7)
    seen: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = workdir / "watch.log"
    # Six rounds at least; more (up to 12) when a slow machine let every round end on
    # the same state: the point is that rounds do kill a loop between its installs.
    for round_no in range(12):
        if round_no >= 6 and len(seen) == 2:
            break
        log.write_bytes(b"")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nginxgen.cli", "watch", "-c", str(spec)],
                stdout=subprocess.DEVNULL,
                stderr=out,
                env=env,
            )
        # The random window opens once the loop is installing (start-up is slow on a
        # loaded machine), so every round kills a loop in the middle of its work.
        started = time.monotonic() + 60
        deadline = None
        i = 0
        while deadline is None or time.monotonic() < deadline:
            write_registry(workdir, (services, flipped)[i % 2])
            i += 1
            time.sleep(0.05 + rng.random() * 0.1)
            if deadline is None and "installed: " in log.read_text(errors="replace"):
                deadline = time.monotonic() + 0.2 + rng.random() * 1.5
            assert time.monotonic() < started, f"the loop never installed: {log.read_text()}"
        proc.kill()
        proc.wait(10)
        now = (workdir / "nginx.conf").read_text()
        assert now in texts
        seen.add(now)
    assert len(seen) == 2  # the loop did install while being killed
    # A new watcher clears what interrupted installs left behind.
    (workdir / ".nginx.conf.leftover.tmp").write_text("half")
    assert run_cli("watch", "-c", str(spec), "--once").returncode == 0
    assert not list(workdir.glob(".nginx.conf.*.tmp"))


def test_reload_through_the_binary_follows_the_registry(watched_gateway, backends):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(app(a), reload="binary")
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 20, "traffic on b")
    # nginx serves the new config before the sidecar has confirmed and counted it.
    eventually(lambda: gw.metric("nginxgen_reloads_total") >= 1, 20, "the reload counted")
    assert gw.stop_watch() == 0


def flapping(
    directory: Path, steady: Backend, flapper: Backend, seconds: float, until: Callable[[], bool]
) -> float:
    """Turn `flapper` down and up every 30-80 ms next to `steady`, for `seconds` or until
    `until()` holds (checked every 0.5 s), then leave it up. Returns how long it took.
    The jitter matters: with a fixed period the watcher notices each flip at once
    (inotify) and a debounce window of a whole number of flips always ends on the same
    state, so no pass ever sees a change."""
    jitter = random.Random(7)
    start = time.monotonic()
    next_check, i = start + 0.5, 0
    while time.monotonic() - start < seconds:
        state = "down" if i % 2 == 0 else "up"
        write_registry(directory, {"app": [*app(steady)["app"], *app(flapper, state=state)["app"]]})
        i += 1
        time.sleep(jitter.uniform(0.03, 0.08))
        if time.monotonic() >= next_check:
            next_check += 0.5
            if until():
                break
    write_registry(directory, app(steady, flapper))
    return time.monotonic() - start


def settled_reloads(gw: WatchedGateway, quiet: float, timeout: float = 30.0) -> float:
    """The reload count once it has not moved for `quiet` seconds (a pass in flight ends)."""
    deadline = time.monotonic() + timeout
    last, since = gw.metric("nginxgen_reloads_total"), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = gw.metric("nginxgen_reloads_total")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise AssertionError(f"reloads kept coming for {timeout}s:\n{gw.logs()}")


def test_a_flapping_instance_costs_far_fewer_reloads_when_damped(watched_gateway, backends):
    a, b = backends("a"), backends("b")
    debounce = {"min": "100ms", "max": "500ms"}
    gw = watched_gateway(app(b, a), watch={"flap": "off", "debounce": debounce})
    assert set(who_answers(gw.url, 10, fresh=True)) == {"a", "b"}

    # Undamped: a reload whenever a pass (debounce, nginx -t, reload, confirm) finds `a`
    # in the other state. Flap until that has made 4 reloads: a loaded machine is slower.
    before = gw.metric("nginxgen_reloads_total")
    took = flapping(
        gw.dir, b, a, 90.0, until=lambda: gw.metric("nginxgen_reloads_total") >= before + 4
    )
    undamped = gw.metric("nginxgen_reloads_total") - before
    assert undamped >= 4, gw.logs()
    eventually(lambda: set(who_answers(gw.url, 10, fresh=True)) == {"a", "b"}, 20, "both serving")

    # Damping on, with a short hold so that the release shows too; flap as long again.
    spec = yaml.safe_load(gw.spec.read_text())
    spec["watch"]["flap"] = {"changes": 3, "window": "30s", "hold": "3s"}
    gw.spec.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    eventually(lambda: "SIGHUP: spec and templates reloaded" in gw.logs(), 20, "spec reload")
    # The pass the SIGHUP starts may still reload (the spec changed); count from after it.
    before = settled_reloads(gw, quiet=2.0)
    client = Client(gw.url)
    client.start()
    try:
        flapping(gw.dir, b, a, max(took, 5.0), until=lambda: False)
        damped = gw.metric("nginxgen_reloads_total") - before
    finally:
        client.stop()
    # Damped: the one reload that pins `a` out, then none while it keeps flapping.
    assert damped <= 1, gw.logs()
    assert client.failures == [], client.failures[:5]
    flap_lines = [line for line in gw.logs().splitlines() if "is flapping" in line]
    assert len(flap_lines) == 1 and "service 'app' instance 'a'" in flap_lines[0], flap_lines
    assert "held out of nginx until it has been stable for 3s" in flap_lines[0]
    # Quiet (up) for the hold: released, and back in nginx.
    eventually(lambda: "stable for 3s, released" in gw.logs(), 20, "release")
    eventually(lambda: set(who_answers(gw.url, 10, fresh=True)) == {"a", "b"}, 20, "a back")
    assert gw.stop_watch() == 0


def test_health_says_not_served_while_nginx_is_down(watched_gateway, backends):
    a = backends("a")
    gw = watched_gateway(app(a))
    assert gw.healthz()[0] == 200
    gw.nginx.stop()
    code, text = eventually(lambda: (h := gw.healthz())[0] == 503 and h, 10, "503")
    assert "is not served: nginx does not answer on its status listener" in text, text
    gw.nginx.start(gw.port)
    eventually(lambda: gw.healthz()[0] == 200, 10, "healthy again")
    assert gw.stop_watch() == 0


def test_a_dry_run_next_to_a_running_watcher_binds_nothing_a_second_watcher_exits_2(
    watched_gateway, backends
):
    a, b = backends("a"), backends("b")
    gw = watched_gateway(app(a))
    installed = gw.conf.read_text()
    write_registry(gw.dir, app(b))
    eventually(lambda: gw.serves_only("b"), 20, "traffic on b")
    dry = run_cli("watch", "-c", str(gw.spec), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Traceback" not in dry.stderr and dry.stdout.strip() == ""  # in step: no diff
    second = run_cli("watch", "-c", str(gw.spec))
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    listen = f"127.0.0.1:{gw.health_port}"
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: watch.listen {listen}: cannot listen: address already in use "
        "(is another nginxgen watch running?)"
    )
    assert gw.conf.read_text() != installed and gw.healthz()[0] == 200
    assert gw.stop_watch() == 0


@pytest.mark.parametrize("reload", ["signal", "binary"])
def test_watch_never_signals_a_process_that_reused_the_nginx_pid(workdir, backends, reload):
    a = backends("a")
    spec = write_spec(
        workdir,
        {
            "nginx": {
                "flavor": "nginx",
                "listen": free_port(),
                "output": "nginx.conf",
                "pid": "nginx.pid",
                "reload": reload,
            },
            "routes": [{"path": "/", "service": "app"}],
        },
        app(a),
    )
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (workdir / "nginx.pid").write_text(f"{stranger.pid}\n")
        result = run_cli("watch", "-c", str(spec), "--once")
        assert result.returncode == 0, result.stderr
        time.sleep(0.2)  # a signal, had one been sent, has arrived by now
        assert stranger.poll() is None, "the unrelated process was signalled"
        said = [line for line in result.stderr.splitlines() if str(stranger.pid) in line]
        assert len(said) == 1, result.stderr
        assert (
            f"nginx is not running (pid {stranger.pid} from {workdir / 'nginx.pid'} is "
            "`sleep 60`, not an nginx master): it starts on the new config"
        ) in said[0]
    finally:
        stranger.kill()
        stranger.wait()


def test_a_failed_apply_leaves_exactly_the_old_bytes_or_no_file(watched_gateway, backends):
    a = backends("a")
    gw = watched_gateway(app(a), watch={"confirm_timeout": "2s"})
    assert gw.stop_watch() == 0
    # Hand-edited on another system: CRLF line ends and a Latin-1 comment. nginx takes it.
    odd = gw.conf.read_bytes().replace(b"\n", b"\r\n") + b"# edited by caf\xe9\r\n"
    gw.conf.write_bytes(odd)
    gw.nginx.reload()
    eventually(lambda: gw.serves_only("a"), 20, "nginx on the edited file")
    with listening_on_a_taken_port(gw):
        failed = run_cli("watch", "-c", str(gw.spec), "--once")
        assert failed.returncode == 1, failed.stderr
        assert f"restored the previous {gw.conf}" in failed.stderr, failed.stderr
        assert gw.conf.read_bytes() == odd
        # No file before (deleted while nginx ran on it): none after a failed apply either,
        # so that the next start of nginx cannot pick up the config that failed.
        gw.conf.unlink()
        failed = run_cli("watch", "-c", str(gw.spec), "--once")
        assert failed.returncode == 1, failed.stderr
        assert f"removed {gw.conf} (there was no file before)" in failed.stderr
        assert not gw.conf.exists()
    assert "Traceback" not in failed.stderr
    assert gw.serves_only("a")
