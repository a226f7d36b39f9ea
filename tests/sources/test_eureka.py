"""Eureka adapter against an in-process server that speaks GET /eureka/apps (JSON)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from nginxgen.sources import RegistryError, open_source
from nginxgen.spec import EurekaRegistry
from tests.helpers.fakes import FakeEureka, closed_port_url, eureka_instance


@pytest.fixture
def eureka() -> Iterator[FakeEureka]:
    server = FakeEureka().start()
    yield server
    server.stop()


def source(url: str, **kw: Any) -> Any:
    return open_source(EurekaRegistry(kind="eureka", url=url, **kw), ())


def test_statuses_ports_and_registration_time(eureka):
    eureka.apps["USERS"] = [
        eureka_instance("users", "10.0.0.1", 8080, metadata={"weight": "5"}),
        eureka_instance("users", "10.0.0.2", "8080", status="DOWN"),  # numbers as strings
        eureka_instance("users", "10.0.0.3", 8080, status="STARTING"),
        eureka_instance("users", "10.0.0.4", 8080, status="OUT_OF_SERVICE"),
        eureka_instance("users", "10.0.0.5", 8080, status="UNKNOWN"),
    ]
    eureka.apps["BILLING"] = [eureka_instance("billing", "10.0.1.1", 9090)]  # one: bare object
    catalog = source(f"{eureka.url}/eureka").read()
    assert set(catalog.services) == {"users", "billing"}  # lower-cased app names
    got = {i.host: i.state for i in catalog.services["users"]}
    assert got == {
        "10.0.0.1": "up",
        "10.0.0.2": "down",
        "10.0.0.3": "starting",
        "10.0.0.4": "draining",
        "10.0.0.5": "down",
    }
    one = catalog.services["billing"][0]
    assert (one.id, one.port) == ("10.0.1.1:billing:9090", 9090)
    first = next(i for i in catalog.services["users"] if i.host == "10.0.0.1")
    assert first.weight == 5
    assert first.registered_at is not None and first.registered_at.year == 2025
    assert eureka.log[-1].headers["Accept"] == "application/json"


def test_single_application_as_object_and_empty_metadata_class(eureka):
    eureka.apps["ONLY"] = [
        eureka_instance(
            "only", "10.0.0.1", 80, metadata={"@class": "java.util.Collections$EmptyMap"}
        )
    ]
    catalog = source(f"{eureka.url}/eureka").read()
    assert catalog.services["only"][0].meta == ()


def test_secure_only_instance_is_dropped_with_reason(eureka):
    eureka.apps["PAY"] = [
        eureka_instance("pay", "10.0.0.1", 8080),
        eureka_instance("pay", "10.0.0.2", 8080, port_enabled="false", secure_enabled="true"),
    ]
    catalog = source(f"{eureka.url}/eureka").read()
    assert [i.host for i in catalog.services["pay"]] == ["10.0.0.1"]
    assert "only the secure port is enabled" in str(catalog.dropped[0])


def test_poll_sees_status_change(eureka):
    eureka.apps["A"] = [eureka_instance("a", "10.0.0.1", 80)]
    src = source(f"{eureka.url}/eureka", poll=0.05)
    version = src.read().version
    assert src.wait(version, timeout=0.3) is False  # renewal timestamps tick, content does not

    def flip() -> None:
        eureka.apps["A"] = [eureka_instance("a", "10.0.0.1", 80, status="OUT_OF_SERVICE")]

    threading.Timer(0.2, flip).start()
    assert src.wait(version, timeout=5) is True
    assert src.read().services["a"][0].state == "draining"


def test_basic_auth_password_never_shown(eureka, monkeypatch):
    monkeypatch.setenv("EUREKA_PASSWORD", "hunter2")
    eureka.fail_with = 401
    with pytest.raises(RegistryError) as exc:
        source(f"{eureka.url}/eureka", username="u", password_env="EUREKA_PASSWORD").read()
    assert "HTTP 401" in str(exc.value) and "hunter2" not in str(exc.value)
    assert eureka.log[-1].headers["Authorization"].startswith("Basic ")


def test_registry_down():
    url = closed_port_url()
    with pytest.raises(RegistryError, match=rf"^eureka {url}/eureka/apps: connection refused"):
        source(f"{url}/eureka").read()


def test_timeout(eureka):
    eureka.delay = 1.5
    with pytest.raises(RegistryError, match=r"no answer within 0.3s"):
        source(f"{eureka.url}/eureka", read_timeout=0.3).read()


def test_http_500(eureka):
    eureka.fail_with = 500
    with pytest.raises(RegistryError, match=r"HTTP 500"):
        source(f"{eureka.url}/eureka").read()


def test_malformed_json(eureka):
    eureka.garbage = True
    with pytest.raises(RegistryError, match=r"not valid JSON"):
        source(f"{eureka.url}/eureka").read()


def test_broken_envelope(eureka):
    eureka.route("GET", "/eureka/apps", lambda req: (200, {}, {"apps": []}))
    eureka.routes.insert(0, eureka.routes.pop())
    with pytest.raises(RegistryError, match=r"no 'applications' object"):
        source(f"{eureka.url}/eureka").read()


def test_bad_instance_among_good_ones(eureka):
    eureka.apps["A"] = [
        eureka_instance("a", "10.0.0.1", 80),
        eureka_instance("a", "10.0.0.2", 0),
        eureka_instance("a", "10.0.0.3", 80, status="ZOMBIE"),
        "not an object",
    ]
    catalog = source(f"{eureka.url}/eureka").read()
    assert [i.host for i in catalog.services["a"]] == ["10.0.0.1"]
    reasons = {d.instance: d.reason for d in catalog.dropped}
    assert "port out of range" in reasons["10.0.0.2:a:0"]
    assert "unknown status 'ZOMBIE'" in reasons["10.0.0.3:a:80"]
    assert "not an object" in reasons["#3"]


def test_instance_without_instance_id_gets_eurekas_default_id(eureka):
    inst = eureka_instance("a", "10.0.0.1", 80)
    del inst["instanceId"]
    eureka.apps["A"] = [inst]
    assert source(f"{eureka.url}/eureka").read().services["a"][0].id == "10.0.0.1:a:80"
