"""`nginxgen render` and `nginxgen services` work against every registry kind."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from nginxgen.cli import app
from tests.helpers.fakes import (
    FakeConsul,
    FakeEureka,
    FakeNacos,
    consul_entry,
    eureka_instance,
    nacos_host,
)

runner = CliRunner()


def start(kind: str):
    """A fake registry holding service `users` with one live and one failing instance."""
    if kind == "consul":
        fake = FakeConsul().start()
        fake.set(
            "users",
            [
                consul_entry("users", "u1", "127.0.0.1", 9001),
                consul_entry("users", "u2", "127.0.0.1", 9002, checks=("critical",)),
            ],
        )
        return fake, {"kind": "consul", "url": fake.url}
    if kind == "nacos":
        fake = FakeNacos().start()
        fake.services["users"] = [
            nacos_host("127.0.0.1", 9001, "users"),
            nacos_host("127.0.0.1", 9002, "users", healthy=False),
        ]
        return fake, {"kind": "nacos", "url": fake.url}
    fake = FakeEureka().start()
    fake.apps["USERS"] = [
        eureka_instance("users", "127.0.0.1", 9001),
        eureka_instance("users", "127.0.0.1", 9002, status="DOWN"),
    ]
    return fake, {"kind": "eureka", "url": f"{fake.url}/eureka"}


@pytest.mark.parametrize("kind", ["consul", "nacos", "eureka"])
def test_render_and_services(kind, tmp_path):
    fake, registry = start(kind)
    try:
        spec = tmp_path / "nginxgen.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "registry": registry,
                    # the server line is what this test reads: endpoints: reload
                    "nginx": {"listen": "127.0.0.1:18080", "endpoints": "reload"},
                    "routes": [{"path": "/users/", "service": "users"}],
                }
            )
        )
        out = tmp_path / "nginx.conf"
        result = runner.invoke(app, ["render", "-c", str(spec), "--no-nginx-test", "-o", str(out)])
        assert result.exit_code == 0, result.output
        text = out.read_text()
        assert "server 127.0.0.1:9001" in text
        assert "127.0.0.1:9002" not in text  # the failing instance gets no traffic

        result = runner.invoke(app, ["services", "-c", str(spec), "--json"])
        assert result.exit_code == 0, result.output
        states = {i["port"]: i["state"] for i in json.loads(result.stdout)["services"]["users"]}
        assert states == {9001: "up", 9002: "down"}
    finally:
        fake.stop()
