"""The Kubernetes source against the in-process API server (tests/helpers/kubernetes.py):
the mapping, list + watch with bookmarks, 410 Gone, outages, tokens, TLS and RBAC."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nginxgen.agent import open_registrar
from nginxgen.cli import app
from nginxgen.model.validate import CatalogBuilder
from nginxgen.registry import RegistryConfigError, RegistryError
from nginxgen.registry import kubernetes as kube_client
from nginxgen.registry.kubernetes import PERMISSIONS, KubernetesClient, resolve
from nginxgen.sources.endpointslices import add_slices, endpoint_state
from nginxgen.sources.kubernetes import KubernetesSource
from nginxgen.spec import KubernetesRegistry, SpecError, parse_spec
from tests.helpers import poll_until as eventually
from tests.helpers.kubernetes import FakeKubeAPI, endpoint, endpoint_slice
from tests.helpers.tls import make_tls_files

TOKEN = "sa-token-1"


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    fake = FakeKubeAPI(token=TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def source(kube: FakeKubeAPI, token_file: Path) -> Iterator[Callable[..., KubernetesSource]]:
    made: list[KubernetesSource] = []

    def make(services: tuple[str, ...] = ("users",), **config: Any) -> KubernetesSource:
        settings = {
            "kind": "kubernetes",
            "api": kube.url,
            "namespace": "shop",
            "token_file": str(token_file),
            "watch_timeout": "30s",
            **config,
        }
        src = KubernetesSource(KubernetesRegistry(**settings), services)
        made.append(src)
        return src

    yield make
    for src in made:
        src.close()


def states(src: KubernetesSource, service: str = "users") -> dict[str, str]:
    return {i.id: i.state for i in src.read().services.get(service, ())}


def changed(src: KubernetesSource, version: str, timeout: float = 10) -> bool:
    """wait() until the version moves (True) or the timeout passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if src.wait(version, min(1.0, deadline - time.monotonic())):
            return True
    return False


def moved(src: KubernetesSource, version: str) -> bool:
    """One short wait() that counts an error (the API server not back yet) as no change."""
    try:
        return src.wait(version, 0.5)
    except RegistryError:
        return False


def wait_error(src: KubernetesSource, version: str, words: str, timeout: float = 10) -> str:
    """wait() until it raises a RegistryError holding `words`; that error's message."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            src.wait(version, 0.5)
        except RegistryError as exc:
            seen.append(str(exc))
            if words in str(exc):
                return str(exc)
            time.sleep(0.05)
    raise AssertionError(f"no error with {words!r} within {timeout}s; saw {seen[-3:]}")


def two_pods(**kwargs: Any) -> dict[str, Any]:
    return endpoint_slice(
        "users", "users-x1", [endpoint("10.0.0.1", "users-a"), endpoint("10.0.0.2", "users-b")],
        **kwargs,
    )  # fmt: skip


# --- mapping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "serving", "terminating", "state"),
    [
        (True, True, False, "up"),
        (False, True, True, "draining"),  # terminating, still serving: drain
        (False, False, True, None),  # terminating and done
        (False, False, False, None),  # not ready
        (True, None, None, "up"),  # before serving/terminating existed: ready decides
        (False, None, None, None),
        (None, None, None, "up"),  # nil ready is "unknown": interpret as ready
        (True, True, None, "up"),  # nil terminating is "not terminating"
    ],
)
def test_conditions_map_to_states(ready, serving, terminating, state):
    conditions = {"ready": ready, "serving": serving, "terminating": terminating}
    assert endpoint_state({k: v for k, v in conditions.items() if v is not None}) == state


def build(*slices: Any, **config: Any) -> Any:
    builder = CatalogBuilder("test")
    add_slices(builder, slices, KubernetesRegistry(kind="kubernetes", **config))
    return builder.build()


def test_endpoints_become_instances_with_pod_node_and_zone():
    catalog = build(
        endpoint_slice(
            "users",
            "users-x1",
            [
                endpoint("10.0.0.1", "users-a", node="node-1", zone="eu-1a"),
                endpoint("10.0.0.2", "users-b", ready=False, terminating=True),
                endpoint("10.0.0.3", "users-c", ready=False, serving=False),
                endpoint("10.0.0.4", None, node=None, zone=None),
            ],
        )
    )
    by_id = {i.id: i for i in catalog.services["users"]}
    assert sorted(by_id) == ["10.0.0.4:8080", "users-a", "users-b"]
    a = by_id["users-a"]
    assert (a.address, a.state, a.weight, a.registered_at) == ("10.0.0.1:8080", "up", 1, None)
    assert a.meta_dict == {"node": "node-1", "zone": "eu-1a", "pod": "users-a"}
    assert by_id["users-b"].state == "draining"
    assert by_id["10.0.0.4:8080"].meta == ()
    assert catalog.dropped == ()


def test_the_port_is_chosen_by_name_or_is_the_only_one():
    ports = [
        {"name": "metrics", "protocol": "TCP", "port": 9090},
        {"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"},
    ]
    both = endpoint_slice("users", "users-x1", [endpoint("10.0.0.1", "users-a")], ports=ports)
    assert [i.port for i in build(both, port="http").services["users"]] == [8080]
    assert [i.port for i in build(both, ports={"users": "metrics"}).services["users"]] == [9090]
    # per service wins over the default
    per_service = build(both, port="http", ports={"users": "metrics"})
    assert [i.port for i in per_service.services["users"]] == [9090]
    unnamed = endpoint_slice("users", "u2", [endpoint("10.0.0.1", "a")], port=80, port_name="")
    assert [i.port for i in build(unnamed).services["users"]] == [80]

    catalog = build(both)
    assert catalog.services["users"] == ()
    assert "the slice has ports 'metrics', 'http': choose one with registry.port" in str(
        catalog.dropped[0]
    )
    assert "no port named 'grpc'" in str(build(both, port="grpc").dropped[0])
    dns = [{"name": "dns", "protocol": "UDP", "port": 53}]
    udp = endpoint_slice("dns", "dns-1", [endpoint("10.0.0.9", "dns-a")], ports=dns)
    assert "is 'UDP', not TCP" in str(build(udp).dropped[0])
    none = endpoint_slice("users", "u3", [endpoint("10.0.0.1", "a")], port=None)
    assert "has no number" in str(build(none).dropped[0])


def test_an_endpoint_in_two_slices_is_kept_once_in_its_most_available_state():
    old = endpoint_slice("users", "users-x1", [endpoint("10.0.0.1", "users-a", terminating=True)])
    new = endpoint_slice("users", "users-x2", [endpoint("10.0.0.1", "users-a")])
    for order in ((old, new), (new, old)):
        catalog = build(*order)
        assert [(i.id, i.state) for i in catalog.services["users"]] == [("users-a", "up")]
        assert catalog.dropped == ()


def test_a_dual_stack_pod_is_kept_once_with_its_ipv4_address():
    v6 = endpoint_slice("users", "users-a6", [endpoint("fd00::1", "users-a")], address_type="IPv6")
    v4 = endpoint_slice("users", "users-b4", [endpoint("10.0.0.1", "users-a")])
    catalog = build(v6, v4)
    assert [i.address for i in catalog.services["users"]] == ["10.0.0.1:8080"]


def test_what_cannot_be_used_is_dropped_and_named():
    no_label = endpoint_slice("users", "stray", [endpoint("10.0.0.1", "a")])
    del no_label["metadata"]["labels"]["kubernetes.io/service-name"]
    bad_type = endpoint_slice("users", "u-1", [endpoint("10.0.0.1", "a")], address_type="IPX")
    yes = {"addresses": ["10.0.0.2"], "conditions": {"ready": "yes"}}
    bad_cond = endpoint_slice("users", "u-2", [yes])
    no_addr = endpoint_slice("users", "u-3", [{"addresses": [], "conditions": {}}])
    bad_ip = endpoint_slice("users", "u-4", [endpoint("10.0.0.1;", "evil")])
    by_name = [endpoint("users-0.users.shop.svc", "users-0")]
    fqdn = endpoint_slice("users", "u-5", by_name, address_type="FQDN")
    catalog = build(no_label, bad_type, bad_cond, no_addr, bad_ip, fqdn)
    lines = sorted(str(d) for d in catalog.dropped)
    assert lines == [
        "service '?' instance 'slice stray': EndpointSlice has no kubernetes.io/service-name label",
        "service 'users' instance 'evil': not an IP address or DNS name: '10.0.0.1;'",
        "service 'users' instance 'slice u-1': addressType 'IPX' is not IPv4, IPv6 or FQDN",
        "service 'users' instance 'slice u-2 endpoint #0': conditions.ready is not a boolean: 'yes'",  # noqa: E501
        "service 'users' instance 'slice u-3 endpoint #0': endpoint has no addresses",
    ]
    assert [i.host for i in catalog.services["users"]] == ["users-0.users.shop.svc"]


# --- list + watch ---------------------------------------------------------------------------


def test_lists_then_watches_from_the_list_with_bookmarks(kube, source):
    kube.apply(two_pods())
    kube.apply(endpoint_slice("orders", "orders-x1", [endpoint("10.0.1.1", "orders-a")]))
    kube.apply(endpoint_slice("other", "other-x1", [endpoint("10.0.2.1", "other-a")]))
    src = source(("users", "orders"))
    catalog = src.read()
    assert {k: [i.id for i in v] for k, v in catalog.services.items()} == {
        "orders": ["orders-a"],
        "users": ["users-a", "users-b"],
    }
    [listed] = kube.calls("list")
    assert listed.query == {
        "labelSelector": "kubernetes.io/service-name in (orders,users)",
        "limit": "500",
    }
    assert listed.headers["Authorization"] == f"Bearer {TOKEN}"
    assert listed.headers["User-Agent"].startswith("nginxgen/")
    assert not src.wait(catalog.version, 0.3)  # opens the watch; nothing changed
    [watch] = kube.calls("watch")
    assert watch.query["resourceVersion"] == str(kube.rv)
    assert watch.query["allowWatchBookmarks"] == "true" and watch.query["watch"] == "true"
    assert 30 <= int(watch.query["timeoutSeconds"]) < 60  # watch_timeout × [1, 2)

    kube.apply(two_pods(port=8081))
    assert changed(src, catalog.version)
    assert {i.port for i in src.read().services["users"]} == {8081}
    assert src.lists == 1


def test_a_pod_goes_terminating_then_its_endpoint_is_deleted(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    kube.apply(endpoint_slice("users", "users-x1", [
        endpoint("10.0.0.1", "users-a", ready=False, terminating=True),
        endpoint("10.0.0.2", "users-b"),
    ]))  # fmt: skip
    assert changed(src, catalog.version)
    catalog = src.read()
    assert states(src) == {"users-a": "draining", "users-b": "up"}
    kube.apply(endpoint_slice("users", "users-x1", [endpoint("10.0.0.2", "users-b")]))
    assert changed(src, catalog.version)
    assert states(src) == {"users-b": "up"}
    kube.delete("users-x1")
    catalog = src.read()
    eventually(lambda: states(src) == {}, 10, "the slice's deletion")
    assert "users" in src.read().services  # the service stays, empty: its routes answer 503


def test_a_change_that_serves_nothing_new_wakes_nobody(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    moved = two_pods()
    moved["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] = "now"
    kube.apply(moved)  # a new resourceVersion, the same endpoints
    assert not src.wait(catalog.version, 1.0)


def test_a_bookmark_only_moves_the_resource_version(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    kube.tick(50)  # other objects in the cluster change
    kube.bookmark()
    eventually(lambda: src.bookmarks == 1, 10, "the bookmark")
    assert not src.wait(catalog.version, 0.3)  # no change to report
    # The history before the bookmark is compacted away; the next watch starts from the
    # bookmark's resourceVersion, which is still kept: no 410, no list.
    kube.compact()
    kube.end_watches()
    eventually(lambda: len(kube.calls("watch")) == 2, 10, "the next watch")
    assert kube.calls("watch")[1].query["resourceVersion"] == str(kube.rv)
    assert not src.wait(catalog.version, 0.5)
    assert (src.lists, src.expirations) == (1, 0)


@pytest.mark.parametrize("expire_as", ["event", "http"])
def test_an_expired_watch_lists_again_and_drops_no_serving_endpoint(kube, source, expire_as):
    kube.expire_as = expire_as
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    kube.list_delay = 1.0  # room to read while the new list is on its way
    with kube.cond:  # a change the watch never delivers, then its history goes
        kube.apply(two_pods(port=8081))
        if expire_as == "http":
            kube.compact()
            kube.end_watches(bookmark=False)  # the next watch, from before, gets HTTP 410
        else:
            kube.expire()  # the open watch gets ERROR 410
    eventually(lambda: len(kube.calls("list")) == 2, 10, "the list after the 410")
    # During the relist the store is the old one, not an empty one.
    assert states(src) == {"users-a": "up", "users-b": "up"}
    assert changed(src, catalog.version)
    assert {i.port for i in src.read().services["users"]} == {8081}
    assert src.expirations == 1 and src.lists == 2
    # ...and the next watch starts from the new list.
    listed_at = str(kube.rv)
    eventually(
        lambda: kube.calls("watch")[-1].query["resourceVersion"] == listed_at,
        10,
        "a watch from the new list",
    )


def test_an_outage_keeps_the_store_and_the_watch_resumes_where_it_was(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    watched_from = kube.calls("watch")[0].query["resourceVersion"]
    kube.stop()
    assert "connection refused" in wait_error(src, catalog.version, "connection refused")
    with pytest.raises(RegistryError, match="connection refused"):
        src.read()  # the caller keeps its last good catalog and says it is stale
    kube.apply(endpoint_slice("users", "users-x1", [endpoint("10.0.0.1", "users-a")]))
    kube.start()
    eventually(lambda: moved(src, catalog.version), 20, "the change made meanwhile")
    assert states(src) == {"users-a": "up"}
    resumed = kube.calls("watch")[-1].query["resourceVersion"]
    assert resumed == watched_from and src.lists == 1  # resumed, not listed again


def test_pages_are_followed_and_an_expired_continue_token_starts_over(kube, source, monkeypatch):
    monkeypatch.setattr(kube_client, "PAGE", 2)
    for n in range(5):
        kube.apply(endpoint_slice("users", f"users-{n}", [endpoint(f"10.0.0.{n}", f"users-{n}")]))
    src = source()
    assert len(src.read().services["users"]) == 5
    assert [c.query.get("continue") is not None for c in kube.calls("list")] == [False, True, True]

    src2 = source()
    kube.list_delay = 0.3
    original = kube._list

    def compact_after_the_first_page(h, namespace, selector, q):
        original(h, namespace, selector, q)
        if "continue" not in q and len(kube.calls("list")) == 4:
            kube.tick()
            kube.compact()  # the snapshot behind the continue token is gone

    monkeypatch.setattr(kube, "_list", compact_after_the_first_page)
    assert len(src2.read().services["users"]) == 5
    tokens = [c.query.get("continue") is not None for c in kube.calls("list")][3:]
    assert tokens == [False, True, False, True, True]


def test_the_token_is_read_again_when_it_rotates(kube, source, token_file):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    # The kubelet writes the new token next to the old one and swaps it in.
    fresh = token_file.with_name("token.new")
    fresh.write_text("sa-token-2\n")
    os.replace(fresh, token_file)
    kube.tokens = {"sa-token-2"}
    kube.end_watches()
    eventually(lambda: len(kube.calls("watch")) == 2, 10, "the next watch")
    assert kube.calls("watch")[1].headers["Authorization"] == "Bearer sa-token-2"
    assert not src.wait(catalog.version, 0.3)


def test_a_401_reads_the_token_file_again_before_it_fails(kube, source, token_file):
    kube.apply(two_pods())
    src = source()
    assert states(src) == {"users-a": "up", "users-b": "up"}
    # A rewrite the stat() check cannot see (same inode, size and mtime): the 401 says it.
    stamp = token_file.stat()
    token_file.write_text("sa-token-2\n")
    os.utime(token_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    kube.tokens = {"sa-token-2"}
    src2 = source()
    src2.client.token = src.client.token  # holds sa-token-1 for the old stamp
    assert states(src2) == {"users-a": "up", "users-b": "up"}
    assert [c.headers["Authorization"] for c in kube.calls("list")][1:] == [
        "Bearer sa-token-1",
        "Bearer sa-token-2",
    ]

    kube.tokens = {"another"}
    with pytest.raises(RegistryError) as exc:
        source().read()
    assert str(exc.value) == (
        f"kubernetes {kube.url}/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices: "
        f"HTTP 401 Unauthorized (the API server refuses the token in {token_file})"
    )
    assert "sa-token" not in str(exc.value)


def test_missing_permissions_are_named_in_the_api_servers_words(kube, source):
    kube.forbidden = {"list"}
    with pytest.raises(RegistryError, match='cannot list resource "endpointslices"'):
        source().read()


def test_the_source_asks_for_nothing_the_rbac_example_does_not_grant(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    kube.expire()
    eventually(lambda: src.lists == 2, 10, "the list after the 410")
    used = {c.verb for c in kube.log}
    assert used == set(PERMISSIONS[("discovery.k8s.io", "endpointslices")])
    assert {c.namespace for c in kube.log} == {"shop"}


def test_a_watch_error_other_than_410_is_an_outage(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    kube.fail_with = 500
    kube.end_watches()
    wait_error(src, catalog.version, "HTTP 500: etcdserver: request timed out")
    with pytest.raises(RegistryError, match="HTTP 500"):
        src.read()
    kube.fail_with = None
    eventually(lambda: not moved(src, catalog.version) and src._error is None, 20, "recovery")
    assert states(src) == {"users-a": "up", "users-b": "up"}


def test_tls_with_the_cluster_ca(tmp_path, token_file):
    tls = make_tls_files(tmp_path / "pki")
    fake = FakeKubeAPI(tls=tls, token=TOKEN).start()
    try:
        fake.apply(two_pods())
        config = {"kind": "kubernetes", "api": fake.url, "namespace": "shop"}
        good = KubernetesSource(
            KubernetesRegistry(**config, token_file=str(token_file), ca_file=str(tls.ca)),
            ["users"],
        )
        assert [i.id for i in good.read().services["users"]] == ["users-a", "users-b"]
        good.close()
        unknown_ca = KubernetesSource(
            KubernetesRegistry(**config, token_file=str(token_file)),
            ["users"],
            client=KubernetesClient(
                KubernetesRegistry(**config, token_file=str(token_file)),
                serviceaccount=str(tmp_path / "none"),
            ),
        )
        with pytest.raises(RegistryError, match="TLS handshake failed"):
            unknown_ca.read()
        unknown_ca.close()
    finally:
        fake.stop()


def test_the_selector_follows_labels_the_service_copies_onto_its_slices(kube, source):
    shop = {"app.kubernetes.io/part-of": "shop"}
    kube.apply(endpoint_slice("users", "users-x1", [endpoint("10.0.0.1", "users-a")], labels=shop))
    kube.apply(endpoint_slice("admin", "admin-x1", [endpoint("10.0.0.9", "admin-a")]))
    src = source((), selector="app.kubernetes.io/part-of=shop")
    catalog = src.read()
    assert list(catalog.services) == ["users"]
    assert kube.calls("list")[0].query["labelSelector"] == (
        "kubernetes.io/service-name,app.kubernetes.io/part-of=shop"
    )
    kube.apply(endpoint_slice("users", "users-x1", [endpoint("10.0.0.1", "users-a")]))
    assert changed(src, catalog.version)  # no longer matches: sent as DELETED
    assert src.read().services == {}


def test_close_stops_the_watch_promptly(kube, source):
    kube.apply(two_pods())
    src = source()
    catalog = src.read()
    assert not src.wait(catalog.version, 0.2)
    eventually(lambda: kube.open_watches == 1, 10, "the open watch")
    started = time.monotonic()
    src.close()
    assert src._thread is not None
    src._thread.join(5)
    assert not src._thread.is_alive() and time.monotonic() - started < 5


# --- settings -------------------------------------------------------------------------------


def test_in_cluster_defaults(tmp_path):
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "namespace").write_text("shop")
    (sa / "token").write_text("t")
    (sa / "ca.crt").write_text("ca")
    config = KubernetesRegistry(kind="kubernetes")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    target = resolve(config, env, str(sa))
    assert target == kube_client.Target(
        "https://10.96.0.1:443", "shop", str(sa / "token"), str(sa / "ca.crt")
    )
    v6 = {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert resolve(config, v6, str(sa)).api == "https://[fd00:10:96::1]:443"
    # kubectl proxy on the laptop: plain HTTP, no service account files
    outside = KubernetesRegistry(kind="kubernetes", api="http://127.0.0.1:8001", namespace="dev")
    assert resolve(outside, {}, str(tmp_path / "none")) == kube_client.Target(
        "http://127.0.0.1:8001", "dev", None, None
    )
    with pytest.raises(RegistryConfigError, match="KUBERNETES_SERVICE_HOST"):
        resolve(config, {}, str(sa))
    with pytest.raises(RegistryConfigError, match="registry.namespace is not set"):
        resolve(config, env, str(tmp_path / "none"))
    missing = KubernetesRegistry(kind="kubernetes", namespace="shop", token_file="/nope/token")
    with pytest.raises(RegistryConfigError, match=r"registry.token_file /nope/token: no such file"):
        resolve(missing, env, str(sa))


def test_the_agent_says_a_cluster_needs_none():
    config = KubernetesRegistry(kind="kubernetes")
    with pytest.raises(ValueError, match="in a cluster the kubelet registers pods"):
        open_registrar(config, "users", "users-1", 10.0)


def test_route_services_must_be_kubernetes_names():
    config = KubernetesRegistry(kind="kubernetes", api="http://127.0.0.1:1", namespace="shop")
    with pytest.raises(RegistryConfigError, match="route service 'Users_V2' is not a Kubernetes"):
        KubernetesSource(config, ["users", "Users_V2"])


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ({"services": ["users"], "selector": "app=x"}, "use services or selector, not both"),
        ({"services": ["users"], "ports": {"orders": "http"}}, "ports names services not in"),
        ({"services": ["Users"]}, "not a valid Kubernetes service name: 'Users'"),
        ({"selector": "app in x"}, "not a valid Kubernetes label selector"),
        ({"namespace": "Shop_1"}, "not a valid Kubernetes namespace"),
        ({"watch_timeout": "100ms"}, "watch_timeout must be at least 1s"),
    ],
)
def test_spec_errors(tmp_path, registry, message):
    text = yaml.safe_dump(
        {
            "registry": {"kind": "kubernetes", **registry},
            "routes": [{"path": "/", "service": "users"}],
        }  # noqa: E501
    )
    with pytest.raises(SpecError, match=message):
        parse_spec(text, tmp_path / "nginxgen.yaml")


def test_services_command_reads_the_cluster_and_outside_one_says_what_to_set(
    kube, tmp_path, token_file, monkeypatch
):
    kube.apply(two_pods())
    spec = tmp_path / "nginxgen.yaml"
    registry = {
        "kind": "kubernetes",
        "api": kube.url,
        "namespace": "shop",
        "token_file": str(token_file),
    }  # noqa: E501
    spec.write_text(
        yaml.safe_dump({"registry": registry, "routes": [{"path": "/", "service": "users"}]})
    )  # noqa: E501
    result = CliRunner().invoke(app, ["services", "-c", str(spec), "--json"])
    assert result.exit_code == 0, result.output
    assert "users-a" in result.stdout and "10.0.0.2" in result.stdout

    spec.write_text(
        yaml.safe_dump(
            {"registry": {"kind": "kubernetes"}, "routes": [{"path": "/", "service": "users"}]}
        )
    )  # noqa: E501
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(app, ["services", "-c", str(spec)])
    assert result.exit_code == 2
    assert (
        "registry.api is not set and KUBERNETES_SERVICE_HOST/_PORT are not either" in result.output
    )
