"""The registry HTTP layer's rules that need no server: secrets, settings errors, wording."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nginxgen.registry import RegistryConfigError, RegistryError
from nginxgen.registry.consul import consul_token
from nginxgen.registry.etcd import EtcdClient
from nginxgen.spec import ConsulRegistry, EtcdRegistry, load_spec
from nginxgen.watch.loop import Options, Watcher
from tests.helpers.fakes import FakeServer


def test_an_unset_password_env_fails_when_the_client_is_made(monkeypatch):
    monkeypatch.delenv("NGINXGEN_TEST_UNSET", raising=False)
    config = EtcdRegistry(kind="etcd", username="root", password_env="NGINXGEN_TEST_UNSET")
    with pytest.raises(RegistryConfigError, match=r"registry\.password_env\)$"):
        EtcdClient(config)
    monkeypatch.setenv("NGINXGEN_TEST_UNSET", "")  # set but empty is the user's choice
    assert EtcdClient(config).password == ""


def test_consul_token_rules(monkeypatch):
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    monkeypatch.delenv("MY_TOKEN", raising=False)
    where = "consul http://127.0.0.1:8500"
    assert consul_token(ConsulRegistry(kind="consul"), where) is None  # Consul without ACLs
    explicit_default = ConsulRegistry(kind="consul", token_env="CONSUL_HTTP_TOKEN")
    assert consul_token(explicit_default, where) is None
    with pytest.raises(RegistryConfigError, match="token environment variable MY_TOKEN"):
        consul_token(ConsulRegistry(kind="consul", token_env="MY_TOKEN"), where)
    monkeypatch.setenv("MY_TOKEN", "t0k")
    assert consul_token(ConsulRegistry(kind="consul", token_env="MY_TOKEN"), where) == "t0k"
    assert consul_token(ConsulRegistry(kind="consul", token="inline"), where) == "inline"


def test_a_refusal_quotes_the_registry_in_its_own_words_without_the_token():
    fake = FakeServer()
    fake.route("POST", "/v3/auth/authenticate", lambda req: (200, {}, {"token": "tok-S3cret"}))
    fake.route(
        "POST",
        "/v3/kv/range",
        lambda req: (403, {}, {"message": f"no access for {req.headers.get('Authorization')}"}),
    )
    fake.start()
    try:
        config = EtcdRegistry(kind="etcd", url=fake.url, username="u", password="pw")
        with pytest.raises(RegistryError) as exc:
            EtcdClient(config).range(b"/services/")
        assert str(exc.value) == f"etcd {fake.url}/v3/kv/range: HTTP 403: no access for ***"
    finally:
        fake.stop()


def test_sighup_onto_unusable_registry_settings_keeps_the_running_spec(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NGINXGEN_TEST_UNSET", raising=False)
    monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
    spec_path = tmp_path / "nginxgen.yaml"
    (tmp_path / "services.yaml").write_text("services: {}\n")
    base = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": {"flavor": "nginx", "output": "nginx.conf", "status_listen": "off"},
        "watch": {"listen": "off"},
        "routes": [{"path": "/", "service": "app"}],
    }
    spec_path.write_text(yaml.safe_dump(base))
    watcher = Watcher(spec_path, load_spec(spec_path), Options(once=True))
    source, spec = watcher.source, watcher.spec
    etcd = {"kind": "etcd", "username": "root", "password_env": "NGINXGEN_TEST_UNSET"}
    spec_path.write_text(yaml.safe_dump({**base, "registry": etcd}))
    watcher._reread_spec()
    assert watcher.source is source and watcher.spec is spec
    source.close()


def test_host_names_are_looked_up_again_only_for_services_whose_instances_changed() -> None:
    from nginxgen.model.catalog import Catalog, Instance
    from nginxgen.sources.resolve import HostKinds

    hosts = HostKinds()
    a = (Instance("a1", "a", "10.0.0.1", 80),)
    b = (Instance("b1", "b", "backend.internal", 80),)
    assert hosts.names_in(Catalog({"a": a, "b": b})) == {"backend.internal"}
    kept = hosts._names["a"]
    b2 = (Instance("b1", "b", "other.internal", 80),)
    assert hosts.names_in(Catalog({"a": a, "b": b2})) == {"other.internal"}, "no stale name"
    assert hosts._names["a"] is kept
    assert hosts.names_in(Catalog({"a": a})) == set() and set(hosts._names) == {"a"}
