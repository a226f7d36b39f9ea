"""The one etcd client (nginxgen/registry/etcd.py) as both sides use it, against real etcd:
TLS with a client certificate, login with a password, secrets, settings errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nginxgen.sources import RegistryError, open_source
from nginxgen.spec import EtcdRegistry, load_spec
from tests.helpers import REPO, Etcd, require_component
from tests.helpers.agent import eventually, write_agent_spec
from tests.helpers.fakes import FakeServer, Request
from tests.helpers.tls import TlsFiles, make_tls_files

KEY = "/services/app/app-1"
PASSWORD = "S3cret-Etcd-pw-42"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "pki")


@pytest.fixture
def tls_etcd(tmp_path: Path, tls: TlsFiles) -> Iterator[Etcd]:
    """etcd that serves https only to clients with a certificate signed by the test CA."""
    require_component("etcd")
    server = Etcd(tmp_path / "etcd-tls-data", tls=tls).start()
    yield server
    server.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **(env or {})},
    )


def spec_in(tmp_path: Path, name: str, registry: dict[str, Any]) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return write_agent_spec(directory, registry)


def pw(password: str) -> dict[str, str]:
    return {"ETCD_PW": password}


def agent_args(address: str = "127.0.0.1:9") -> tuple[str, ...]:
    return ("--service", "app", "--id", "app-1", "--address", address, "--ttl", "3s")


# --- TLS --------------------------------------------------------------------------------


def test_agent_and_source_use_tls_and_a_client_certificate(tmp_path, tls, tls_etcd, agents):
    registry: dict[str, Any] = {
        "kind": "etcd",
        "url": tls_etcd.url,
        "tls": {"ca": str(tls.ca), "cert": str(tls.client_cert), "key": str(tls.client_key)},
    }
    spec = write_agent_spec(tmp_path, registry)
    agent = agents(spec, *agent_args(), "--drain", "0s")
    value = eventually(lambda: tls_etcd.get(KEY)[0], 30, "the key, written over TLS", agent)
    assert value["state"] == "up" and tls_etcd.url.startswith("https://")

    source = open_source(load_spec(spec).registry, ("app",))
    try:
        assert [i.id for i in source.read().services["app"]] == ["app-1"]
    finally:
        source.close()

    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    assert tls_etcd.get(KEY)[0] is None


def test_a_refused_handshake_reads_the_same_on_both_sides(tmp_path, tls, tls_etcd, agents):
    # The CA is right, but no client certificate: etcd refuses the handshake.
    registry = {"kind": "etcd", "url": tls_etcd.url, "tls": {"ca": str(tls.ca)}}
    spec = write_agent_spec(tmp_path, registry)
    agent = agents(spec, *agent_args())
    agent.wait_log("registry unreachable")
    source = open_source(load_spec(spec).registry, ("app",))
    with pytest.raises(RegistryError) as exc:
        source.read()
    source.close()
    wording = "TLS handshake failed (check tls.ca / tls.cert)"
    assert wording in str(exc.value)
    assert f"etcd {tls_etcd.url}/v3/" in agent.log() and wording in agent.log()
    assert agent.alive()  # a registry it cannot reach never ends the agent


def test_a_missing_tls_file_is_a_usage_error_on_both_sides(tmp_path, tls_etcd):
    missing = tmp_path / "no-such-ca.pem"
    spec = write_agent_spec(
        tmp_path, {"kind": "etcd", "url": tls_etcd.url, "tls": {"ca": str(missing)}}
    )
    for args in (("agent", "-c", str(spec), *agent_args()), ("render", "-c", str(spec))):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert f"registry.tls.ca {missing}: no such file" in result.stderr
        assert "Traceback" not in result.stderr


# --- login --------------------------------------------------------------------------------


def test_an_unset_password_env_is_a_usage_error_on_both_sides(tmp_path, etcd_server):
    registry = {
        "kind": "etcd",
        "url": etcd_server.url,
        "username": "root",
        "password_env": "NGINXGEN_TEST_NO_SUCH_VAR",
    }
    spec = write_agent_spec(tmp_path, registry)
    wanted = "password environment variable NGINXGEN_TEST_NO_SUCH_VAR is not set"
    for args in (
        ("agent", "-c", str(spec), *agent_args()),
        ("render", "-c", str(spec)),
        ("watch", "--once", "-c", str(spec)),
        ("services", "-c", str(spec)),
    ):
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert wanted in result.stderr and "registry.password_env" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def echoing_member() -> FakeServer:
    """An etcd endpoint that is unwell and quotes the request back in its error, as some
    proxies and broken gateways do: whatever we send must not reach a log from there."""

    def echo(req: Request) -> tuple[int, dict[str, str], Any]:
        said = req.body.decode(errors="replace")
        return 500, {}, {"error": f"cannot serve {said}", "message": f"cannot serve {said}"}

    server = FakeServer()
    server.route("POST", "/", echo)
    return server.start()


def test_a_password_never_reaches_a_log_line_or_an_error(tmp_path, etcd_server, agents):
    etcd_server.ctl("user", "add", "root", f"--new-user-password={PASSWORD}")
    etcd_server.ctl("auth", "enable")
    echo = echoing_member()
    try:
        registry = {
            "kind": "etcd",
            "endpoints": [echo.url, etcd_server.url],
            "username": "root",
            "password_env": "ETCD_PW",
        }
        spec = write_agent_spec(tmp_path, registry)
        agent = agents(spec, *agent_args(), "--drain", "0s", env=pw(PASSWORD))
        # The unwell member is skipped; the login and the writes go to the real one.
        eventually(
            lambda: etcd_server.ctl(f"--user=root:{PASSWORD}", "get", KEY).strip(),
            30,
            "the key, written with a login",
            agent,
        )
        assert any(PASSWORD.encode() in r.body for r in echo.log)  # it did hear it

        # Only the echoing member: every error quotes the password back.
        only_echo = {**registry, "endpoints": [echo.url]}
        lonely = agents(spec_in(tmp_path, "echo", only_echo), *agent_args(), env=pw(PASSWORD))
        lonely.wait_log("registry unreachable")
        source = open_source(
            EtcdRegistry(kind="etcd", endpoints=[echo.url], username="root", password=PASSWORD),
            (),
        )
        with pytest.raises(RegistryError) as exc:
            source.read()
        source.close()
        assert "***" in str(exc.value) and PASSWORD not in str(exc.value)

        # A wrong password is refused by etcd in its own words, without repeating it.
        wrong = spec_in(tmp_path, "wrong", registry)
        refused = agents(wrong, *agent_args(), env=pw("Wrong-" + PASSWORD))
        refused.wait_log("authentication failed")

        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
        for proc in (agent, lonely, refused):
            assert PASSWORD not in proc.log(), proc.log()
        assert "Wrong-" not in refused.log()
    finally:
        echo.stop()


def test_an_expired_token_is_renewed_by_the_agent(tmp_path, etcd_server, agents):
    """etcd's simple tokens expire (--auth-token-ttl, 300s by default) and a restart drops
    them all; the agent logs in again instead of failing every heartbeat from then on."""
    etcd_server.ctl("user", "add", "root", f"--new-user-password={PASSWORD}")
    etcd_server.ctl("auth", "enable")
    spec = write_agent_spec(
        tmp_path,
        {"kind": "etcd", "url": etcd_server.url, "username": "root", "password_env": "ETCD_PW"},
    )
    agent = agents(spec, *agent_args(), "--ttl", "30s", "--drain", "0s", env=pw(PASSWORD))
    eventually(
        lambda: etcd_server.ctl(f"--user=root:{PASSWORD}", "get", KEY).strip(), 30, "key", agent
    )
    etcd_server.restart()  # every token it handed out is gone
    before = agent.log().count("registry unreachable")
    agent.signal(signal.SIGTERM)  # the drain writes `draining`: that call needs a new token
    assert agent.wait(30) == 0
    assert "deregistered from etcd" in agent.log()
    assert agent.log().count("registry unreachable") == before
    assert etcd_server.ctl(f"--user=root:{PASSWORD}", "get", KEY).strip() == ""
    assert PASSWORD not in agent.log()
