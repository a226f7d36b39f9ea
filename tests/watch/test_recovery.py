"""The prober's recovery through an instance's own agent, against the agent's real control
endpoint (ControlServer and RestartDesk in this process), and the probe kinds tcp and
https against real listeners."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nginxgen.agent.control import ControlServer, TokenFile
from nginxgen.agent.restart import RestartDesk, RestartLimit
from nginxgen.deploy.workers import Worker
from nginxgen.model.validate import CatalogBuilder
from nginxgen.spec import SpecError, parse_spec
from nginxgen.watch.probe import OLD_WORKERS_WAIT, Prober
from nginxgen.watch.recovery import HookRun, control_url
from tests.helpers import ManualClock
from tests.helpers import seconds_until as eventually
from tests.helpers.agent import TOKEN, TcpServer, token_file
from tests.helpers.tls import SERVER_NAME, HttpsServer, make_tls_files


class Agent:
    """The agent's control endpoint, as `nginxgen agent --control-listen` serves it."""

    def __init__(self, tmp_path: Path, limit: int = 3) -> None:
        self.clock = ManualClock(0.0)
        self.lines: list[str] = []
        self.desk = RestartDesk(
            RestartLimit(limit, 600.0, self.clock), self.lines.append, clock=self.clock
        )
        tokens = TokenFile(str(token_file(tmp_path / "agent")), self.lines.append)
        self.server = ControlServer("127.0.0.1", 0, tokens, self.desk, self.lines.append)
        self.url = f"http://127.0.0.1:{self.server.server.server_address[1]}"

    def restarts(self) -> int:
        return self.desk.status()["limit"]["used"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    (tmp_path / "agent").mkdir()
    a = Agent(tmp_path)
    yield a
    a.server.close()


def gateway_token(tmp_path: Path, token: str = TOKEN) -> Path:
    (tmp_path / "gw").mkdir(exist_ok=True)
    return token_file(tmp_path / "gw", token)


def prober_for(
    tmp_path: Path,
    recovery: str,
    instances: list[tuple[str, str | None]],
    running: set[Worker] | None = None,
):
    """A prober with recovery `recovery` over instances (address, advertised control URL);
    runs hook calls it reports into the returned list. `running`: the nginx processes that
    still run, as the prober sees them (default: /proc)."""
    spec = parse_spec(
        "registry: {kind: file, path: s.yaml}\n"
        "defaults: {probe: {interval: 1s, timeout: 0.5s, fall: 2, rise: 1, "
        f"recovery: {recovery}}}}}\n"
        "routes: [{path: /, service: app}]\n",
        tmp_path / "nginxgen.yaml",
    )
    b = CatalogBuilder("t")
    for i, (address, control) in enumerate(instances):
        b.add(
            "app",
            id=f"i{i}",
            address=address,
            meta={"nginxgen_control": control} if control else {},
        )
    runs: list[HookRun] = []
    clock = ManualClock(0.0)
    if running is None:
        prober = Prober(spec, clock=clock, on_recovery=runs.append)
    else:
        prober = Prober(
            spec, clock=clock, on_recovery=runs.append, alive=lambda ws: ws & frozenset(running)
        )
    prober.update(b.build())
    return prober, clock, runs


def seconds_until_or_none(check: Callable[[], bool], timeout: float) -> bool:
    """Whether `check` holds within `timeout` seconds (the hooks run on a pool)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def rounds(prober: Prober, clock: ManualClock, n: int, step: float = 1.0) -> None:
    for _ in range(n):
        prober.probe_all()
        clock.now += step


def test_a_pseudo_dead_instance_is_restarted_through_its_agent_once_per_cooldown(
    tmp_path, backends, agent, caplog
) -> None:
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    tokens = gateway_token(tmp_path)
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 3, agent: true, token_file: {tokens}, cooldown: 1m}}",
        [(ok.address, None), (sick.address, agent.url)],
    )
    caplog.set_level(logging.INFO, "nginxgen.probe")
    try:
        rounds(prober, clock, 2)
        assert runs == [] and agent.restarts() == 0  # dead after 2, the agent after 3
        rounds(prober, clock, 5)
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == "ok" and runs[0].action == "agent", runs
        assert runs[0].detail.startswith(f"POST {agent.url}/restart: HTTP 202 (restart ")
        assert agent.restarts() == 1 and agent.desk.take() is not None
        # The cooldown: no second call until a minute after the first.
        rounds(prober, clock, 50)
        assert len(runs) == 1
        rounds(prober, clock, 15)
        eventually(lambda: len(runs) == 2)
        # The first restart still runs on the agent: it says so, and that is a refusal.
        assert runs[1].result == "refused" and "a restart is running" in runs[1].detail
        assert agent.restarts() == 1
    finally:
        prober.stop()
    assert "recovery for app/i1@" in caplog.text and ": ok: POST " in caplog.text
    assert TOKEN not in caplog.text and not any(TOKEN in line for line in agent.lines)


def test_no_agent_is_asked_while_no_other_instance_passes(tmp_path, backends, agent) -> None:
    a, b = backends("a"), backends("b")
    a.health_status = b.health_status = 500  # a probe wrong for every instance
    tokens = gateway_token(tmp_path)
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {tokens}, cooldown: 1s}}",
        [(a.address, agent.url), (b.address, agent.url)],
    )
    try:
        rounds(prober, clock, 10)
        eventually(lambda: len(runs) == 2)
        assert {r.result for r in runs} == {"held"}  # once per instance, not per probe
        assert "no other instance of 'app' passes its probes" in runs[0].detail
        assert agent.restarts() == 0
        a.health_status = 200  # a passes again: now b's agent is asked
        # Round by round: whether a's pass or b's failure is seen first in a round is up to
        # the probe pool, so b's agent is asked in the round after a passes, or the next.
        for _ in range(5):
            rounds(prober, clock, 1)
            if seconds_until_or_none(lambda: len(runs) == 3, 2.0):
                break
        eventually(lambda: len(runs) == 3)
        assert runs[-1].result == "ok" and runs[-1].key.startswith("app/i1@")
        assert agent.restarts() == 1
    finally:
        prober.stop()


@pytest.mark.parametrize(
    ("token", "limit", "result", "said"),
    [
        ("wrong-token-" + "x" * 20, 3, "refused", "HTTP 401 (a valid bearer token is required)"),
        (TOKEN, 0, "limited", "HTTP 429 (restart limit of 0 per 10m reached)"),
    ],
)
def test_the_agents_refusals_are_results(tmp_path, backends, token, limit, result, said) -> None:
    (tmp_path / "agent").mkdir()
    agent = Agent(tmp_path, limit=max(limit, 1))
    if limit == 0:
        assert agent.desk.request("someone").status == 202  # the one allowed is used
        agent.desk.finish("ok")
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    tokens = gateway_token(tmp_path, token)
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {tokens}}}",
        [(ok.address, None), (sick.address, agent.url)],
    )
    try:
        rounds(prober, clock, 3)
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == result and runs[0].detail.endswith(said.replace(" 0 ", " 1 "))
        assert agent.desk.take() is None
    finally:
        prober.stop()
        agent.server.close()


def test_the_token_goes_only_to_the_instances_own_host(tmp_path, backends) -> None:
    ok, sick, elsewhere = backends("ok"), backends("sick"), backends("elsewhere")
    sick.health_status = 500
    tokens = gateway_token(tmp_path)
    # A registry entry that points the control URL at another host.
    foreign = f"http://localhost:{elsewhere.address.rsplit(':', 1)[1]}"
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {tokens}}}",
        [(ok.address, None), (sick.address, foreign)],
    )
    try:
        rounds(prober, clock, 3)
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == "no_endpoint"
        assert "is not an http(s) URL on the instance's host" in runs[0].detail
        assert elsewhere.count == 0
    finally:
        prober.stop()


def test_an_unreadable_token_file_fails_the_call_and_says_which(tmp_path, backends, agent):
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    tokens = gateway_token(tmp_path)
    tokens.chmod(0o644)
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {tokens}}}",
        [(ok.address, None), (sick.address, agent.url)],
    )
    try:
        rounds(prober, clock, 3)
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == "failed"
        assert runs[0].detail.startswith(f"probe.recovery.token_file {tokens}: is accessible by")
        assert agent.restarts() == 0
    finally:
        prober.stop()


@pytest.mark.parametrize(
    ("control", "address", "expected"),
    [
        ("http://10.0.0.5:9901", "10.0.0.5:8080", "http://10.0.0.5:9901/restart"),
        ("https://10.0.0.5/agent/", "10.0.0.5:8080", "https://10.0.0.5/agent/restart"),
        ("http://[::1]:9901", "[::1]:8080", "http://[::1]:9901/restart"),
        ("http://Unit.Example:9901", "unit.example:8080", "http://Unit.Example:9901/restart"),
        ("http://10.0.0.6:9901", "10.0.0.5:8080", None),
        ("http://user@10.0.0.5:9901", "10.0.0.5:8080", None),
        ("ftp://10.0.0.5:9901", "10.0.0.5:8080", None),
        ("http://10.0.0.5:9901?x=1", "10.0.0.5:8080", None),
        ("http://10.0.0.5:99999", "10.0.0.5:8080", None),
        ("", "10.0.0.5:8080", None),
        (None, "10.0.0.5:8080", None),
    ],
)
def test_control_urls(control, address, expected) -> None:
    assert control_url(control, address) == expected


@pytest.mark.parametrize(
    ("recovery", "message"),
    [
        ("{agent: true}", "agent: true needs token_file"),
        ("{agent: true, url: 'http://x', token_file: t}", "give exactly one of"),
        ("{url: 'http://x', token_file: t}", "token_file is for agent: true"),
    ],
)
def test_recovery_spec_errors(tmp_path, recovery, message) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(
            "registry: {kind: file, path: s.yaml}\n"
            f"defaults: {{probe: {{recovery: {recovery}}}}}\n"
            "routes: [{path: /, service: app}]\n",
            tmp_path / "nginxgen.yaml",
        )


# --- probe kinds ---------------------------------------------------------------------


def kind_prober(tmp_path: Path, probe: str, address: str) -> Prober:
    spec = parse_spec(
        "registry: {kind: file, path: s.yaml}\n"
        f"defaults: {{probe: {probe}}}\n"
        "routes: [{path: /, service: app}]\n",
        tmp_path / "nginxgen.yaml",
    )
    b = CatalogBuilder("t")
    b.add("app", id="i0", address=address)
    prober = Prober(spec)
    prober.update(b.build())
    return prober


def test_a_tcp_only_backend_that_stops_accepting_is_taken_out(tmp_path) -> None:
    unit = TcpServer()
    prober = kind_prober(tmp_path, "{kind: tcp, timeout: 0.5s, fall: 2, rise: 1}", unit.address)
    try:
        for _ in range(3):
            prober.probe_all()
        assert prober.dead() == frozenset()
        # A probe's connect completes in the kernel's backlog; the server's thread counts
        # it when it gets to accept() (later, on a loaded machine).
        eventually(lambda: unit.accepted == 3)
        unit.stop_accepting()
        prober.probe_all()
        prober.probe_all()
        assert prober.dead() == {f"app/i0@{unit.address}"}
        (status,) = prober.status()
        assert status.last_error == "connection refused"
    finally:
        prober.stop()


def test_an_https_health_route_that_starts_failing_is_taken_out(tmp_path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    unit = HttpsServer(tls)
    address = f"127.0.0.1:{unit.port}"
    prober = kind_prober(
        tmp_path,
        f"{{kind: https, ca: {tls.ca}, sni: {SERVER_NAME}, timeout: 1s, fall: 2, rise: 1}}",
        address,
    )
    untrusted = kind_prober(tmp_path, "{kind: https, timeout: 1s, fall: 1}", address)
    try:
        prober.probe_all()
        assert prober.dead() == frozenset() and unit.names == [SERVER_NAME]
        unit.status = 500
        prober.probe_all()
        prober.probe_all()
        assert prober.dead() == {f"app/i0@{address}"}
        assert prober.status()[0].last_error == "HTTP 500 from /healthz"
        # Without the CA the certificate is not accepted: that is a failed probe too.
        untrusted.probe_all()
        assert untrusted.status()[0].last_error.startswith("TLS certificate not accepted")
    finally:
        prober.stop()
        untrusted.stop()
        unit.stop()


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ("{kind: tcp, sni: a.example}", "ca, sni and verify are for kind: https, not tcp"),
        ("{kind: http, verify: false}", "are for kind: https, not http"),
        ("{kind: https, sni: 10.0.0.1x y}", "sni must be a DNS name"),
        ("{kind: https, ca: ca.pem, verify: false}", "contradict each other"),
        ("{kind: udp}", "kind"),
    ],
)
def test_probe_kind_spec_errors(tmp_path, probe, message) -> None:
    with pytest.raises(SpecError, match=message):
        kind_prober(tmp_path, probe, "127.0.0.1:1")


def test_under_watch_the_agent_is_asked_only_once_nginx_serves_without_the_instance(
    tmp_path, backends, agent
) -> None:
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    tokens = gateway_token(tmp_path)
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {tokens}}}",
        [(ok.address, None), (sick.address, agent.url)],
    )
    key = f"app/i1@{sick.address}"
    try:
        prober.served_without(frozenset())  # the watch loop reports: nothing kept out yet
        rounds(prober, clock, 6)
        assert prober.dead() == {key}
        assert runs == [] and agent.restarts() == 0  # nginx may still send it requests
        prober.served_without(frozenset({key}))  # the reload that keeps it out serves
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == "ok" and agent.restarts() == 1
        prober.served_without(frozenset({key}))  # later passes: the cooldown holds
        rounds(prober, clock, 3)
        assert len(runs) == 1
    finally:
        prober.stop()


def test_the_agent_is_asked_only_once_the_nginx_workers_from_before_the_reload_are_gone(
    tmp_path, backends, agent
) -> None:
    # After a reload the master lets the old workers accept for ~100 ms more, and they
    # finish what they hold (failover retries included) by the old config: until they
    # exit, a request may still reach the unit.
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    old = (4242, 1000)  # (pid, start time) of the worker from before the reload
    running = {old}
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {gateway_token(tmp_path)}}}",
        [(ok.address, None), (sick.address, agent.url)],
        running,
    )
    key = f"app/i1@{sick.address}"
    try:
        prober.served_without(frozenset())  # the watch loop reports: nothing kept out yet
        rounds(prober, clock, 4)
        prober.served_without(frozenset({key}), frozenset({old}))
        rounds(prober, clock, 5)
        assert prober.dead() == {key}
        assert runs == [] and agent.restarts() == 0  # the old worker may still send to it
        running.clear()  # it finished its requests and exited
        rounds(prober, clock, 1)
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == "ok" and agent.restarts() == 1
    finally:
        prober.stop()


def test_old_workers_hold_a_restart_back_for_a_bounded_time(
    tmp_path, backends, agent, caplog
) -> None:
    caplog.set_level(logging.WARNING, "nginxgen.probe")
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    old = (4242, 1000)
    prober, clock, runs = prober_for(
        tmp_path,
        f"{{after: 2, agent: true, token_file: {gateway_token(tmp_path)}}}",
        [(ok.address, None), (sick.address, agent.url)],
        {old},  # a worker that holds a long-lived connection and never exits
    )
    key = f"app/i1@{sick.address}"
    try:
        prober.served_without(frozenset())
        rounds(prober, clock, 3)
        prober.served_without(frozenset({key}), frozenset({old}))
        rounds(prober, clock, int(OLD_WORKERS_WAIT) - 1)
        assert runs == []
        rounds(prober, clock, 2)
        eventually(lambda: len(runs) == 1)
        assert runs[0].result == "ok"
        said = [r.message for r in caplog.records if "from before the reload" in r.message]
        assert said == [
            "nginx worker(s) 4242 from before the reload still run after 60s; asking agents "
            "to restart without waiting for them (they may still send requests by the old "
            "config)"
        ]
    finally:
        prober.stop()


def test_an_unusable_token_file_is_said_at_start(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, "nginxgen.probe")
    missing = tmp_path / "nope.token"
    prober, _, _ = prober_for(
        tmp_path, f"{{agent: true, token_file: {missing}}}", [("127.0.0.1:1", None)]
    )
    prober.stop()
    assert f"probe.recovery.token_file {missing}: no such file; restarts through the " in (
        caplog.text
    )
    assert "agents of 'app' fail until it is fixed" in caplog.text


def test_the_cooldown_holds_when_the_restarted_instance_comes_back(
    tmp_path, backends, agent
) -> None:
    ok, sick = backends("ok"), backends("sick")
    sick.health_status = 500
    tokens = gateway_token(tmp_path)
    instances = [(ok.address, None), (sick.address, agent.url)]
    prober, clock, runs = prober_for(
        tmp_path, f"{{after: 2, agent: true, token_file: {tokens}, cooldown: 1m}}", instances
    )

    def catalog(*which: tuple[str, str | None]):
        b = CatalogBuilder("t")
        for i, (address, control) in enumerate(which):
            meta = {"nginxgen_control": control} if control else {}
            b.add("app", id=f"i{i}", address=address, meta=meta)
        return b.build()

    try:
        rounds(prober, clock, 3)
        eventually(lambda: len(runs) == 1)
        assert agent.desk.take() is not None
        agent.desk.finish("ok")
        prober.update(catalog(instances[0]))  # deregistered by its agent ...
        prober.update(catalog(*instances))  # ... and back, still failing
        rounds(prober, clock, 20)
        assert len(runs) == 1 and agent.restarts() == 1  # within the minute: not again
        rounds(prober, clock, 45)
        eventually(lambda: len(runs) == 2)
        assert runs[1].result == "ok" and agent.restarts() == 2
    finally:
        prober.stop()
