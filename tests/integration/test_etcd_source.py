"""The etcd adapter against a real etcd: leases, watch latency, restarts, compaction."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import time
from typing import Any

import pytest
import requests

from nginxgen.sources import RegistryError, open_source
from nginxgen.sources.etcd import EtcdSource
from nginxgen.spec import EtcdRegistry
from tests.helpers.fakes import FakeServer, closed_port_url


def source(etcd_url: str | None = None, **kw: Any) -> EtcdSource:
    if etcd_url is not None:
        kw.setdefault("url", etcd_url)
    src = open_source(EtcdRegistry(kind="etcd", **kw), ())
    assert isinstance(src, EtcdSource)
    return src


def put(etcd, key: str, value: dict[str, Any], *args: str) -> None:
    etcd.ctl("put", key, json.dumps(value), *args)


def ids(catalog, service: str) -> set[str]:
    return {i.id for i in catalog.services.get(service, ())}


def test_layout_fields_and_bad_values_are_dropped_by_name(etcd_server):
    put(
        etcd_server,
        "/services/users/u1",
        {
            "address": "127.0.0.1:9001",
            "weight": 5,
            "state": "draining",
            "registered_at": "2026-11-29T10:00:00Z",
            "tags": ["v2"],
            "meta": {"zone": "a"},
        },
    )
    put(etcd_server, "/services/users/u2", {"host": "::1", "port": 9002})
    put(etcd_server, "/services/users/evil", {"address": "127.0.0.1:80;}"})
    put(etcd_server, "/services/users/typo", {"address": "127.0.0.1:80", "wieght": 3})
    etcd_server.ctl("put", "/services/users/notjson", "{oops")
    etcd_server.ctl("put", "/services/loose-key", "{}")
    etcd_server.ctl("put", "/other/thing", "{}")  # outside the prefix: never read
    catalog = source(etcd_server.url).read()
    by_id = {i.id: i for i in catalog.services["users"]}
    assert set(by_id) == {"u1", "u2"}
    u1 = by_id["u1"]
    assert (u1.address, u1.weight, u1.state, u1.tags, u1.meta) == (
        "127.0.0.1:9001",
        5,
        "draining",
        ("v2",),
        (("zone", "a"),),
    )
    assert by_id["u2"].address == "[::1]:9002"
    reasons = {d.instance: d.reason for d in catalog.dropped}
    assert "port is not a number: '80;}'" in reasons["evil"]
    assert "unknown field(s): wieght" in reasons["typo"]
    assert "not valid JSON" in reasons["notjson"]
    assert "<service>/<instance-id>" in reasons["/services/loose-key"]
    assert int(catalog.version) > 0


def test_leased_instance_appears_and_leaves_when_its_heartbeat_stops(etcd_server):
    out = etcd_server.ctl("lease", "grant", "3")
    lease = re.search(r"lease ([0-9a-f]+) granted", out).group(1)
    put(etcd_server, "/services/api/a1", {"address": "127.0.0.1:9100"}, f"--lease={lease}")
    keepalive = subprocess.Popen(
        ["etcdctl", f"--endpoints={etcd_server.url}", "lease", "keep-alive", lease],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    src = source(etcd_server.url)
    try:
        catalog = src.read()
        assert ids(catalog, "api") == {"a1"}
        # Alive past its TTL while the heartbeat runs.
        assert src.wait(catalog.version, timeout=4.5) is False
        assert ids(src.read(), "api") == {"a1"}
        keepalive.terminate()
        keepalive.wait(10)
        started = time.monotonic()
        assert src.wait(catalog.version, timeout=15) is True
        assert time.monotonic() - started < 12  # TTL 3s plus etcd's lease checks, under load
        assert ids(src.read(), "api") == set()
    finally:
        keepalive.kill()
        src.close()


def test_put_and_delete_are_seen_well_under_a_second(etcd_server):
    put(etcd_server, "/services/web/w1", {"address": "127.0.0.1:9201"})
    src = source(etcd_server.url)
    try:
        version = src.read().version
        src.wait(version, timeout=0.2)  # the stream is open from here on
        latencies = []
        for step in range(6):
            key = f"/services/web/w{step + 2}"
            body = json.dumps(
                {"key": b64(key), "value": b64(json.dumps({"address": "127.0.0.1:1"}))}
            )
            if step % 2:
                requests.post(
                    f"{etcd_server.url}/v3/kv/deleterange",
                    data=json.dumps({"key": b64(f"/services/web/w{step + 1}")}),
                    timeout=5,
                )
            else:
                requests.post(f"{etcd_server.url}/v3/kv/put", data=body, timeout=5)
            # From etcd's acknowledgement (its disk sync is not ours to time) to the catalog.
            started = time.monotonic()
            assert src.wait(version, timeout=10) is True
            catalog = src.read()
            latencies.append(time.monotonic() - started)
            if step % 2:
                assert f"w{step + 1}" not in ids(catalog, "web")  # the delete is visible
            else:
                assert f"w{step + 2}" in ids(catalog, "web")  # the put is visible
            version = catalog.version
        assert max(latencies) < 1.0, latencies
        assert ids(catalog, "web") == {"w1"}
    finally:
        src.close()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_watch_survives_an_etcd_restart(etcd_server):
    put(etcd_server, "/services/web/w1", {"address": "127.0.0.1:9201"})
    src = source(etcd_server.url)
    try:
        version = src.read().version
        assert src.wait(version, timeout=0.3) is False
        etcd_server.restart()
        put(etcd_server, "/services/web/w2", {"address": "127.0.0.1:9202"})
        deadline = time.monotonic() + 20
        changed = False
        while not changed and time.monotonic() < deadline:
            try:
                changed = src.wait(version, timeout=2)
            except RegistryError as exc:  # the stream is reconnecting: say so, and retry
                assert "etcd" in str(exc)
        assert changed
        assert src.reconnects >= 1  # the stream really broke and was resumed
        assert ids(src.read(), "web") == {"w1", "w2"}
        # And it keeps following changes on the new stream.
        version = src.read().version
        threading.Timer(0.2, lambda: etcd_server.ctl("del", "/services/web/w1")).start()
        assert src.wait(version, timeout=10) is True
        assert ids(src.read(), "web") == {"w2"}
    finally:
        src.close()


def test_a_wiped_etcd_is_watched_from_its_new_history(etcd_server):
    """Revisions start over in a wiped (or replaced) cluster. Waiting for the old ones
    would make every wait return at once — a spinning read loop — and miss new changes."""
    for i in range(10):  # the old history runs well past where the new one starts
        put(etcd_server, "/services/web/w1", {"address": "127.0.0.1:9201", "weight": i + 1})
    src = source(etcd_server.url)
    try:
        old = src.read().version
        assert src.wait(old, timeout=0.3) is False  # the stream is open at the old revision
        etcd_server.restart(wipe=True)
        put(etcd_server, "/services/web/w2", {"address": "127.0.0.1:9202"})
        catalog = wait_for_read(src)
        assert int(catalog.version) < int(old) and ids(catalog, "web") == {"w2"}
        assert src.history_resets == 1
        # Quiet registry: the wait waits (no instant True) ...
        started = time.monotonic()
        assert wait_quietly(src, catalog.version, 1.0) is False
        assert time.monotonic() - started >= 0.9
        # ... and a change in the new history is noticed.
        threading.Timer(0.2, lambda: etcd_server.ctl("del", "/services/web/w2")).start()
        assert wait_quietly(src, catalog.version, 10) is True
        assert ids(src.read(), "web") == set()
    finally:
        src.close()


def wait_for_read(src: EtcdSource, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return src.read()
        except RegistryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_quietly(src: EtcdSource, version: str, timeout: float) -> bool:
    """wait(), but a stream still reconnecting after the restart is not the answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return src.wait(version, max(0.0, deadline - time.monotonic()))
        except RegistryError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def test_compaction_makes_the_caller_read_again(etcd_server):
    put(etcd_server, "/services/web/w1", {"address": "127.0.0.1:9201"})
    src = source(etcd_server.url)
    try:
        version = src.read().version
        put(etcd_server, "/services/web/w2", {"address": "127.0.0.1:9202"})
        put(etcd_server, "/unrelated", {})
        rev = int(
            requests.post(
                f"{etcd_server.url}/v3/kv/range",
                data=json.dumps({"key": b64("/unrelated")}),
                timeout=5,
            ).json()["header"]["revision"]
        )
        r = requests.post(
            f"{etcd_server.url}/v3/kv/compaction",
            data=json.dumps({"revision": str(rev), "physical": True}),
            timeout=5,
        )
        assert r.status_code == 200, r.text
        # The history after `version` is gone: the watch reports a change to force a re-read.
        assert src.wait(version, timeout=10) is True
        assert src.compactions == 1
        catalog = src.read()
        assert ids(catalog, "web") == {"w1", "w2"}
        threading.Timer(0.2, lambda: etcd_server.ctl("del", "/services/web/w2")).start()
        assert src.wait(catalog.version, timeout=10) is True
        assert ids(src.read(), "web") == {"w1"}
    finally:
        src.close()


def test_fails_over_to_the_next_endpoint(etcd_server):
    put(etcd_server, "/services/web/w1", {"address": "127.0.0.1:9201"})
    src = source(endpoints=[closed_port_url(), etcd_server.url])
    try:
        catalog = src.read()
        assert ids(catalog, "web") == {"w1"}
        threading.Timer(0.2, lambda: etcd_server.ctl("del", "/services/web/w1")).start()
        assert src.wait(catalog.version, timeout=10) is True
    finally:
        src.close()


def test_username_and_password_authenticate(etcd_server, monkeypatch):
    etcd_server.ctl("user", "add", "root", "--new-user-password=r00tpw")
    etcd_server.ctl("auth", "enable")
    etcd_server.ctl(
        "--user=root:r00tpw", "put", "/services/web/w1", json.dumps({"address": "127.0.0.1:9201"})
    )
    monkeypatch.setenv("ETCD_PASSWORD", "r00tpw")
    src = source(etcd_server.url, username="root", password_env="ETCD_PASSWORD")
    try:
        catalog = src.read()
        assert ids(catalog, "web") == {"w1"}
        threading.Timer(
            0.2, lambda: etcd_server.ctl("--user=root:r00tpw", "del", "/services/web/w1")
        ).start()
        assert src.wait(catalog.version, timeout=10) is True
    finally:
        src.close()
    with pytest.raises(RegistryError) as exc:
        source(etcd_server.url).read()  # no credentials
    assert "etcd" in str(exc.value)
    monkeypatch.setenv("ETCD_PASSWORD", "wrong-pw")
    with pytest.raises(RegistryError) as exc:
        source(etcd_server.url, username="root", password_env="ETCD_PASSWORD").read()
    assert "wrong-pw" not in str(exc.value)


# --- failures -------------------------------------------------------------------------


def test_all_endpoints_down():
    a, b = closed_port_url(), closed_port_url()
    with pytest.raises(RegistryError) as exc:
        source(endpoints=[a, b]).read()
    message = str(exc.value)
    assert message.startswith(f"etcd {a}, {b}: every endpoint failed")
    assert "connection refused" in message and "\n" not in message


@pytest.fixture
def fake_etcd():
    server = FakeServer()
    server.route("POST", "/v3/kv/range", lambda req: (200, {}, {"header": {"revision": "7"}}))
    server.start()
    yield server
    server.stop()


def test_timeout(fake_etcd):
    fake_etcd.delay = 1.5
    with pytest.raises(RegistryError, match=r"no answer within 0.3s"):
        source(fake_etcd.url, read_timeout=0.3).read()


def test_http_500(fake_etcd):
    fake_etcd.fail_with = 500
    with pytest.raises(RegistryError, match=rf"^etcd {fake_etcd.url}/v3/kv/range: HTTP 500"):
        source(fake_etcd.url).read()


def test_malformed_json(fake_etcd):
    fake_etcd.garbage = True
    with pytest.raises(RegistryError, match=r"not valid JSON"):
        source(fake_etcd.url).read()


def test_empty_prefix_is_an_empty_catalog(fake_etcd):
    catalog = source(fake_etcd.url).read()
    assert catalog.services == {} and catalog.version == "7"


def test_an_unwell_member_is_skipped_but_a_refusal_is_not(etcd_server, fake_etcd):
    put(etcd_server, "/services/web/w1", {"address": "127.0.0.1:9201"})
    fake_etcd.fail_with = 503  # e.g. "etcdserver: no leader"
    assert ids(source(endpoints=[fake_etcd.url, etcd_server.url]).read(), "web") == {"w1"}
    fake_etcd.fail_with = 403
    with pytest.raises(RegistryError, match=r"HTTP 403"):
        source(endpoints=[fake_etcd.url, etcd_server.url]).read()


def test_reads_after_watch_events_revalidate_only_the_services_they_touch(etcd_server):
    """After the first range, a read applies the stream's events: the catalog is the one
    a full read would give, and untouched services keep their very tuple of instances."""
    from nginxgen.registry.shift import ETCD_DIR

    for name in ("a", "b", "c"):
        put(etcd_server, f"/services/{name}/{name}1", {"address": "127.0.0.1:9301"})
    src = source(etcd_server.url)
    try:
        first = src.read()
        assert src.wait(first.version, timeout=0.3) is False  # the stream follows now
        steps = [
            lambda: put(etcd_server, "/services/b/b1", {"address": "127.0.0.1:9302"}),
            lambda: put(etcd_server, "/services/b/b2", {"address": "127.0.0.1:80;}"}),
            lambda: etcd_server.ctl("del", "/services/c/c1"),
            lambda: put(etcd_server, "/services/new/n1", {"address": "127.0.0.1:9303"}),
            lambda: etcd_server.ctl("put", f"/services/{ETCD_DIR}a", '{"weights":{}}'),
        ]
        last = first
        for step in steps:
            step()
            assert wait_quietly(src, last.version, 10) is True
            catalog = src.read()
            full = source(etcd_server.url).read()
            assert catalog.services == full.services, "the same catalog as a full read"
            assert list(catalog.services) == list(full.services), "in the same order"
            assert set(catalog.dropped) == set(full.dropped) and catalog.splits == full.splits
            assert int(catalog.version) > int(last.version)
            assert catalog.services["a"] is first.services["a"], "untouched: the same tuple"
            last = catalog
        assert src.full_reads == 1
        assert {i.address for i in last.services["b"]} == {"127.0.0.1:9302"}
        assert "c" not in last.services and "new" in last.services
    finally:
        src.close()
