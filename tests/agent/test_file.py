"""`nginxgen agent` with the file registry: every edit is atomic and keeps other entries."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from nginxgen.sources.file import parse_registry
from tests.helpers.agent import eventually, write_agent_spec


def entries(path: Path, service: str = "app") -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text()) or {}
    return {e["id"]: e for e in (data.get("services") or {}).get(service) or []}


def test_agents_edit_the_file_atomically_and_keep_other_entries(tmp_path, agents, backends):
    registry = tmp_path / "services.yaml"
    registry.write_text(
        yaml.safe_dump({"services": {"other": [{"id": "o1", "address": "127.0.0.1:9"}]}})
    )
    spec = write_agent_spec(tmp_path, {"kind": "file", "path": "services.yaml"})
    a, b = backends("a"), backends("b")
    # Two agents on one file at once: the lock keeps either from losing the other's edit.
    first = agents(spec, "--service", "app", "--id", "a", "--address", a.address, "--drain", "0")
    second = agents(spec, "--service", "app", "--id", "b", "--address", b.address, "--drain", "0")
    eventually(lambda: set(entries(registry)) == {"a", "b"}, 30, "both entries", first)
    assert entries(registry, "other") == {"o1": {"id": "o1", "address": "127.0.0.1:9"}}

    # What the gateway reads back is valid and complete.
    catalog = parse_registry(registry.read_bytes(), str(registry))
    assert catalog.dropped == ()
    assert {i.address for i in catalog.services["app"]} == {a.address, b.address}
    assert all(i.state == "up" and i.registered_at for i in catalog.services["app"])

    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    assert set(entries(registry)) == {"b"}
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert entries(registry) == {}
    assert entries(registry, "other") == {"o1": {"id": "o1", "address": "127.0.0.1:9"}}
    # No temp files left behind by the atomic writes.
    assert sorted(p.name for p in tmp_path.glob(".services.yaml*")) == []


def test_unhealthy_unit_is_written_down(tmp_path, agents, backends):
    registry = tmp_path / "services.yaml"
    spec = write_agent_spec(tmp_path, {"kind": "file", "path": "services.yaml"})
    app = backends("app")
    agent = agents(
        spec,
        *("--service", "app", "--id", "a", "--address", app.address),
        *("--health-url", f"http://{app.address}/healthz", "--health-interval", "0.1s"),
    )
    eventually(lambda: registry.exists() and entries(registry).get("a", {}).get("state") == "up")
    app.health_status = 500
    eventually(lambda: entries(registry)["a"]["state"] == "down", 30, "down", agent)


@pytest.mark.parametrize(
    "content",
    [b"services: [not, a, mapping]\n", b"{unclosed: [\n", b"just text\n"],
    ids=["services-a-list", "not-yaml", "not-a-mapping"],
)
def test_the_source_and_the_agent_word_a_broken_file_alike(tmp_path, content):
    """One client (registry/file.py) for both sides: the same file gives the same error."""
    from datetime import datetime, timezone

    from nginxgen.agent.base import Record
    from nginxgen.agent.file import FileRegistrar
    from nginxgen.registry import RegistryError
    from nginxgen.sources.file import FileSource
    from nginxgen.spec import FileRegistry

    registry = tmp_path / "services.yaml"
    registry.write_bytes(content)
    config = FileRegistry(kind="file", path=str(registry))
    with pytest.raises(RegistryError) as read:
        FileSource(config).read()
    record = Record("app", "app-1", "127.0.0.1:9001", 1, "up", datetime.now(timezone.utc))
    with pytest.raises(RegistryError) as write:
        FileRegistrar(config, "app", "app-1", 10).register(record)
    assert str(read.value) == str(write.value)
    assert str(read.value).startswith(f"file registry {registry}")
    assert registry.read_bytes() == content  # the agent wrote nothing
