"""Split overrides as each registry keeps them: read into Catalog.splits, noticed as changes,
and written by `nginxgen shift`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nginxgen.sources import open_source
from nginxgen.sources.consul import ConsulSource
from nginxgen.sources.file import FileSource
from nginxgen.spec import ConsulRegistry, FileRegistry
from tests.helpers.fakes import FakeConsul, consul_entry
from tests.helpers.gateway import run_cli


@pytest.fixture
def consul() -> Iterator[FakeConsul]:
    server = FakeConsul()
    server.start()
    yield server
    server.stop()


def test_consul_kv_override_is_read_and_its_change_wakes_the_wait(consul: FakeConsul) -> None:
    consul.set("carts", [consul_entry("carts", "b1", "10.0.0.1", 80, meta={"version": "blue"})])
    src = open_source(ConsulRegistry(kind="consul", url=consul.url), ())
    assert isinstance(src, ConsulSource)
    first = src.read()
    assert first.splits == {}
    text = '{"weights":{"blue":0,"green":100}}'
    consul._kv_put(_req("PUT", "nginxgen/split/carts", text.encode()))
    second = src.read()
    assert second.splits == {"carts": text}
    assert second.fingerprint() != first.fingerprint()
    timer = threading.Timer(
        0.2, lambda: consul._kv_put(_req("PUT", "nginxgen/split/carts", b'{"weights":{}}'))
    )
    timer.start()
    assert src.wait(second.version, timeout=5) is True
    src.close()


def test_shift_writes_consul_kv(consul: FakeConsul, tmp_path: Path) -> None:
    consul.set("carts", [consul_entry("carts", "b1", "10.0.0.1", 80, meta={"version": "blue"})])
    spec = tmp_path / "nginxgen.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "registry": {"kind": "consul", "url": consul.url, "kv_prefix": "gw/"},
                "routes": [{"path": "/", "service": "carts"}],
                "services": {"carts": {"split": {"weights": {"blue": 90, "green": 10}}}},
            }
        )
    )
    r = run_cli("shift", "-c", str(spec), "carts", "--to", "green")
    assert r.returncode == 0, r.stderr
    assert "written to Consul KV key gw/split/carts" in r.stdout
    assert json.loads(consul.kv["gw/split/carts"])["weights"] == {"blue": 0, "green": 100}
    shown = run_cli("shift", "-c", str(spec), "--show")
    assert "carts: blue=100 green=0 (from registry override: blue=0 green=100" in shown.stdout
    assert run_cli("shift", "-c", str(spec), "carts", "--clear").returncode == 0
    assert "gw/split/carts" not in consul.kv


def test_file_registry_overrides_beside_it_are_read_and_noticed(tmp_path: Path) -> None:
    registry = tmp_path / "services.yaml"
    registry.write_text(yaml.safe_dump({"services": {"carts": []}}))
    src = FileSource(FileRegistry(kind="file", path=str(registry), poll=0.05))
    before = src.read()
    assert before.splits == {}
    beside = tmp_path / "services.yaml.split.json"
    beside.write_text('{"carts": {"weights": {"blue": 100}}}')
    assert src.wait(before.version, timeout=2) is True
    after = src.read()
    assert json.loads(after.splits["carts"]) == {"weights": {"blue": 100}}
    beside.write_text("[not an object")
    broken = src.read()
    assert broken.splits == {}
    assert any("not a JSON object" in str(d) for d in broken.dropped)


def _req(method: str, key: str, body: bytes):  # type: ignore[no-untyped-def]
    from tests.helpers.fakes import Request

    return Request(method, f"/v1/kv/{key}", {}, {}, body)
