"""`nginxgen services`: the registry as a table or JSON; registry text is never markup."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from nginxgen.cli import app
from tests.helpers import write_spec

runner = CliRunner()


def spec_with(tmp_path, services):
    return write_spec(
        tmp_path, {"nginx": {"listen": 18080}, "routes": [{"path": "/", "service": "a"}]}, services
    )


def test_table_json_and_dropped_warnings(tmp_path):
    spec = spec_with(
        tmp_path,
        {
            "a": [
                {"id": "a1", "address": "127.0.0.1:9001", "weight": 3, "tags": ["[red]x[/red]"]},
                {"id": "a2", "address": "127.0.0.1:99999"},
                {"id": "a3", "address": "127.0.0.1:9003", "tags": ["ok", "bad\x07"]},
            ],
            "[/x]": [{"id": "b1", "address": "127.0.0.1:9002"}],
        },
    )
    result = runner.invoke(app, ["services", "-c", str(spec)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "127.0.0.1:9001" in result.stdout
    assert "[red]x[/red]" in result.stdout  # shown literally, not as colour markup
    assert "port out of range" in result.stderr and "'a2'" in result.stderr
    assert "[/x]" in result.stderr

    result = runner.invoke(app, ["services", "-c", str(spec), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["services"]["a"][0] == {
        "id": "a1",
        "host": "127.0.0.1",
        "port": 9001,
        "address": "127.0.0.1:9001",
        "state": "up",
        "weight": 3,
        "registered_at": None,
        "tags": ["[red]x[/red]"],
        "meta": {},
    }
    assert {d["instance"] for d in data["dropped"]} >= {"a2"}
    # A bad tag is left out alone: a3 is listed with its good tag, the tag is reported.
    assert next(i for i in data["services"]["a"] if i["id"] == "a3")["tags"] == ["ok"]
    tag = next(d for d in data["dropped"] if d["instance"] == "a3")
    assert tag["field"] == "tags" and "instance kept" in tag["reason"]


def test_exit_codes(tmp_path):
    spec = spec_with(tmp_path, {"a": []})
    (tmp_path / "services.yaml").write_text("services: [not, a, mapping]\n")
    result = runner.invoke(app, ["services", "-c", str(spec)])
    assert result.exit_code == 1 and "expected a mapping" in result.stderr
    result = runner.invoke(app, ["services", "-c", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "spec file not found" in result.stderr
