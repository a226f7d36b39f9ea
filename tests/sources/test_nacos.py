"""Nacos adapter against an in-process server that speaks the Nacos naming Open API."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from nginxgen.sources import RegistryError, open_source
from nginxgen.spec import NacosRegistry, Spec
from nginxgen.watch.loop import Watcher
from tests.helpers.fakes import FakeNacos, closed_port_url, nacos_host


@pytest.fixture
def nacos() -> Iterator[FakeNacos]:
    server = FakeNacos().start()
    yield server
    server.stop()


def source(url: str, **kw: Any) -> Any:
    return open_source(NacosRegistry(kind="nacos", url=url, **kw), ())


def test_all_instances_with_health_enabled_and_weight(nacos):
    nacos.services["orders"] = [
        nacos_host("10.0.0.1", 8080, "orders", weight=3.0),
        nacos_host("10.0.0.2", 8080, "orders", healthy=False),
        nacos_host("10.0.0.3", 8080, "orders", enabled=False),
        nacos_host("10.0.0.4", 8080, "orders", weight=0.0),
        nacos_host("10.0.0.5", 8080, "orders", cluster="BJ", metadata={"zone": "bj-a"}),
        nacos_host("10.0.0.6", 8080, "orders", metadata={"state": "starting"}),
    ]
    catalog = source(nacos.url, namespace="prod", group="PAY", services=["orders"]).read()
    got = {i.id: (i.state, i.weight) for i in catalog.services["orders"]}
    assert got == {
        "10.0.0.1:8080": ("up", 3),
        "10.0.0.2:8080": ("down", 1),
        "10.0.0.3:8080": ("draining", 1),
        "10.0.0.4:8080": ("draining", 1),  # weight 0: Nacos sends it nothing
        "BJ/10.0.0.5:8080": ("up", 1),
        "10.0.0.6:8080": ("starting", 1),
    }
    query = nacos.log[-1].query
    assert query["healthyOnly"] == "false"  # all instances, not only healthy ones
    assert query["namespaceId"] == "prod" and query["groupName"] == "PAY"


def test_services_are_discovered_when_not_listed(nacos):
    nacos.services["a"] = [nacos_host("10.0.0.1", 1, "a")]
    nacos.services["b"] = []
    assert set(source(nacos.url).read().services) == {"a", "b"}


def test_login_token_is_used_and_never_shown(monkeypatch):
    nacos = FakeNacos(username="nacos", password="pa55word").start()
    try:
        nacos.services["a"] = [nacos_host("10.0.0.1", 80, "a")]
        monkeypatch.setenv("NACOS_PASSWORD", "pa55word")
        src = source(nacos.url, username="nacos", password_env="NACOS_PASSWORD", services=["a"])
        assert len(src.read().services["a"]) == 1
        assert nacos.log[-1].query["accessToken"] == nacos.token
        nacos.fail_with = 500
        with pytest.raises(RegistryError) as exc:
            src.read()
        assert nacos.token not in str(exc.value) and "pa55word" not in str(exc.value)
        monkeypatch.setenv("NACOS_PASSWORD", "wrong")
        nacos.fail_with = None
        with pytest.raises(RegistryError, match=r"/nacos/v1/auth/login: HTTP 403") as exc:
            source(nacos.url, username="nacos", password_env="NACOS_PASSWORD").read()
        assert "wrong" not in str(exc.value)
    finally:
        nacos.stop()


def test_missing_password_env_is_one_clear_line(nacos, monkeypatch):
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    with pytest.raises(RegistryError, match=r"password environment variable NO_SUCH_VAR"):
        source(nacos.url, username="u", password_env="NO_SUCH_VAR").read()


def test_poll_sees_a_change_and_ignores_ticking_timestamps(nacos):
    nacos.services["a"] = [nacos_host("10.0.0.1", 80, "a")]
    src = source(nacos.url, services=["a"], poll=0.05)
    version = src.read().version
    assert src.wait(version, timeout=0.4) is False  # lastRefTime ticks; content does not
    threading.Timer(
        0.2, lambda: nacos.services["a"].append(nacos_host("10.0.0.2", 80, "a"))
    ).start()
    assert src.wait(version, timeout=5) is True
    assert len(src.read().services["a"]) == 2


def test_registry_down():
    url = closed_port_url()
    with pytest.raises(RegistryError, match=rf"^nacos {url}/nacos/v1/ns/instance/list: conn"):
        source(url, services=["a"]).read()


def test_timeout(nacos):
    nacos.delay = 1.5
    with pytest.raises(RegistryError, match=r"no answer within 0.3s"):
        source(nacos.url, services=["a"], read_timeout=0.3).read()


def test_http_500(nacos):
    nacos.fail_with = 500
    with pytest.raises(RegistryError, match=r"HTTP 500"):
        source(nacos.url, services=["a"]).read()


def test_malformed_json(nacos):
    nacos.garbage = True
    with pytest.raises(RegistryError, match=r"not valid JSON"):
        source(nacos.url, services=["a"]).read()


def test_broken_envelope_fails_the_read(nacos):
    nacos.route("GET", "/nacos/v1/ns/instance/list", lambda req: (200, {}, {"hosts": "x"}))
    nacos.routes.insert(0, nacos.routes.pop())
    with pytest.raises(RegistryError, match=r"no hosts list"):
        source(nacos.url, services=["a"]).read()


def test_bad_instance_among_good_ones_is_dropped_by_name(nacos):
    nacos.services["a"] = [
        nacos_host("10.0.0.1", 80, "a"),
        nacos_host("10.0.0.2", "eighty", "a"),
        nacos_host("10.0.0.3\nlocation", 80, "a"),
        nacos_host("10.0.0.4", 80, "a", weight="heavy"),
    ]
    catalog = source(nacos.url, services=["a"]).read()
    assert [i.id for i in catalog.services["a"]] == ["10.0.0.1:80"]
    reasons = {d.instance: d.reason for d in catalog.dropped}
    assert "port is not a number" in reasons["10.0.0.2:eighty"]
    assert "10.0.0.3\\nlocation:80" in reasons  # control characters shown escaped
    assert "weight is not a number" in reasons["10.0.0.4:80"]


def test_service_names_are_read_page_by_page(nacos, monkeypatch):
    monkeypatch.setattr("nginxgen.sources.nacos.PAGE", 2)
    for n in range(5):
        nacos.services[f"s{n}"] = [nacos_host(f"10.0.0.{n + 1}", 80, f"s{n}")]
    assert sorted(source(nacos.url).read().services) == ["s0", "s1", "s2", "s3", "s4"]
    pages = [r.query["pageNo"] for r in nacos.log if r.path.endswith("/service/list")]
    assert pages == ["1", "2", "3"]


def test_a_server_that_ignores_page_no_fails_the_read_instead_of_looping(nacos, monkeypatch):
    monkeypatch.setattr("nginxgen.sources.nacos.PAGE", 2)
    for n in range(5):
        nacos.services[f"s{n}"] = []
    nacos.ignore_page_no = True
    served = nacos._service_list
    calls = []

    def bounded(req):  # keeps a looping client from hanging the test
        calls.append(req)
        return served(req) if len(calls) <= 50 else (500, {}, b"test gave up")

    nacos.route("GET", "/nacos/v1/ns/service/list", bounded)
    nacos.routes.insert(0, nacos.routes.pop())
    with pytest.raises(RegistryError, match=r"page 2 .* same services as page 1.*pageNo"):
        source(nacos.url).read()
    assert len(calls) == 2


def test_the_watcher_keeps_the_last_good_config_when_paging_breaks(nacos, monkeypatch, tmp_path):
    monkeypatch.setattr("nginxgen.sources.nacos.PAGE", 2)
    monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
    for name in ("app", "b", "c"):
        nacos.services[name] = [nacos_host("127.0.0.1", 9001, name)]
    registry = {"kind": "nacos", "url": nacos.url}
    spec = Spec.model_validate(
        {
            "registry": registry,
            "nginx": {"flavor": "nginx", "output": str(tmp_path / "nginx.conf"),
                      "pid": str(tmp_path / "nginx.pid"), "status_listen": "off"},
            "watch": {"listen": "off"},
            "routes": [{"path": "/", "service": "app"}],
        }
    )  # fmt: skip
    w = Watcher(tmp_path / "nginxgen.yaml", spec, source=source(nacos.url))
    w.apply(w.read())
    good = (tmp_path / "nginx.conf").read_text()
    assert "127.0.0.1:9001" in good
    nacos.services["app"] = [nacos_host("127.0.0.1", 9002, "app")]
    nacos.ignore_page_no = True
    with pytest.raises(RegistryError, match="ignores pageNo"):
        w.read()
    assert "ignores pageNo" in w.health.status()[1]
    assert (tmp_path / "nginx.conf").read_text() == good


def test_paging_stops_at_a_bound_when_pages_never_end(nacos, monkeypatch):
    monkeypatch.setattr("nginxgen.sources.nacos.PAGE", 2)
    monkeypatch.setattr("nginxgen.sources.nacos.MAX_PAGES", 5)
    calls = []

    def endless(req):  # new names on every page, and no count to stop at
        calls.append(req)
        page = int(req.query["pageNo"])
        return 200, {}, {"doms": [f"p{page}a", f"p{page}b"]}

    nacos.route("GET", "/nacos/v1/ns/service/list", endless)
    nacos.routes.insert(0, nacos.routes.pop())
    with pytest.raises(RegistryError, match=r"more than 5 pages"):
        source(nacos.url).read()
    assert len(calls) == 5
