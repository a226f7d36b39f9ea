"""Registry data never becomes nginx syntax, whatever the registry says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import Catalog
from nginxgen.model.validate import CatalogBuilder, safe_name
from nginxgen.pipeline import BuildCache, build
from nginxgen.plan.endpoints import plan_document
from nginxgen.registry.etcd import b64
from nginxgen.sources.consul import add_entries
from nginxgen.sources.endpointslices import add_slices
from nginxgen.sources.etcd import add_kv
from nginxgen.sources.eureka import parse_apps
from nginxgen.sources.file import parse_registry
from nginxgen.sources.nacos import add_hosts
from nginxgen.spec import KubernetesRegistry, parse_spec
from nginxgen.util.yaml_load import load_data
from nginxgen.verify.parse import parse_text
from tests.helpers import require_nginx
from tests.helpers.fakes import consul_entry, eureka_instance, nacos_host

NASTY = st.sampled_from(
    [";", "{", "}", "\n", "$", '"', "'", "#", " ", "\\", "\t", "ü", "😀", "\x00", "`", "/*"]
)
# Text that is mostly hostile: fragments of nginx syntax mixed with ordinary characters.
HOSTILE = st.lists(st.one_of(NASTY, st.text(max_size=4)), max_size=8).map("".join)
ADDRESS = st.one_of(
    HOSTILE,
    st.builds(lambda h, p: f"{h}:{p}", HOSTILE, st.integers(-5, 70000)),
    st.builds(lambda p, s: f"127.0.0.1:{p}{s}", st.integers(1, 65535), HOSTILE),
    st.builds(lambda p: f"127.0.0.1:{p}", st.integers(1, 65535)),
)
# Numbers, times and text that broke conversions: infinities, integers no float holds,
# offsets that push a time out of range, digits that are not ASCII.
NUMBERS = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 10**300, 10**400, -(10**400), 2**63, 2**64 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
OFFSET = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23))
TIMES = st.one_of(
    st.datetimes(timezones=st.builds(timezone, OFFSET)),
    st.datetimes(min_value=datetime(9999, 12, 31), timezones=st.builds(timezone, OFFSET)),
    st.datetimes(max_value=datetime(1, 1, 2), timezones=st.builds(timezone, OFFSET)),
    st.datetimes(),
    st.dates(),
)
ODD_TEXT = st.sampled_from(
    ["٨٠", "²", "８０", "80\n", " 80", "0x50", "1_000", "1e999", "-1e999", "inf", "nan", "9" * 400,
     "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-13-45T10:00:00Z",
     "127.0.0.1:²", "127.0.0.1:٨٠", "[::1]:８０", "2026-11-29T10:00:00Z"]
)  # fmt: skip
SCALAR = st.one_of(HOSTILE, NUMBERS, TIMES, ODD_TEXT, st.none(), st.booleans())
# Any value a YAML or JSON registry can hold, in any field.
ANY = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
COMMON = {
    "weight": st.one_of(ANY, NUMBERS),
    "state": st.one_of(st.sampled_from(["up", "starting", "draining", "down"]), HOSTILE, ANY),
    "registered_at": st.one_of(ANY, TIMES, NUMBERS),
    "tags": st.one_of(st.lists(HOSTILE, max_size=3), st.lists(ANY, max_size=3), ANY),
    "meta": st.one_of(st.dictionaries(HOSTILE, HOSTILE, max_size=3), ANY),
}
ID = st.one_of(HOSTILE, st.integers(), ANY)
# The two shapes the file registry takes: `address`, or `host` and `port`.
BY_ADDRESS = st.fixed_dictionaries(
    {"id": ID, "address": st.one_of(ADDRESS, ODD_TEXT, ANY)}, optional=COMMON
)
BY_HOST_PORT = st.fixed_dictionaries(
    {
        "id": ID,
        "host": st.one_of(HOSTILE, st.just("127.0.0.1"), ANY),
        "port": st.one_of(st.integers(-5, 70000), ODD_TEXT, NUMBERS, ANY),
    },
    optional=COMMON,
)
INSTANCE = st.one_of(BY_ADDRESS, BY_HOST_PORT)
REGISTRY = st.dictionaries(
    st.one_of(HOSTILE, st.just("users")), st.lists(INSTANCE, max_size=4), min_size=1, max_size=4
)
GOOD = {"id": "known-good", "address": "127.0.0.1:9999", "weight": 3}


def registry_file(services: dict[str, Any], as_json: bool) -> bytes:
    """The services file as YAML or as JSON (which the file registry reads as YAML)."""
    document = {"services": services}
    if as_json:
        return json.dumps(document, default=str).encode()
    return yaml.safe_dump(document, allow_unicode=True).encode()


def with_good_neighbours(services: dict[str, Any], data: Any) -> dict[str, Any]:
    """Every service list with one valid instance at a position hypothesis picks."""
    out = {}
    for name, instances in services.items():
        at = data.draw(st.integers(0, len(instances)), label=f"good instance in {name!r}")
        out[name] = [*instances[:at], GOOD, *instances[at:]]
    return out


# Everything the templates write; a directive outside this set was smuggled in.
ALLOWED = {
    "worker_processes", "worker_rlimit_nofile", "pid", "error_log", "events",
    "worker_connections", "http",
    "server_tokens", "default_type", "sendfile", "keepalive_timeout", "access_log",
    "client_max_body_size", "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path",
    "uwsgi_temp_path", "scgi_temp_path", "variables_hash_max_size",
    "proxy_headers_hash_max_size", "upstream", "zone", "server", "keepalive", "listen",
    "server_name", "location", "return", "proxy_pass", "proxy_http_version",
    "proxy_set_header", "proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout",
    "proxy_next_upstream", "proxy_next_upstream_tries", "proxy_next_upstream_timeout",
    "add_header", "allow", "deny", "stub_status", "map", "map_hash_bucket_size",
    "map_hash_max_size", "set", "log_format",
    # metrics (on by default): Lua modules, their shared dict, the hooks, /metrics
    "load_module", "lua_package_path", "lua_shared_dict", "init_by_lua_block",
    "init_worker_by_lua_block", "log_by_lua_block", "content_by_lua_block",
    # nginx.endpoints dynamic (the default): the Lua balancer, its 503 (error_page 500 to
    # a named location; a cached route's rewrite_by_lua check), the feed
    "balancer_by_lua_block", "error_page", "rewrite_by_lua_block", "client_body_buffer_size",
    # streams: and websocket routes, which registry instances feed too
    "stream", "proxy_timeout",
}  # fmt: skip


def walk(block: list[dict[str, Any]]):
    for d in block:
        yield d
        if d["directive"] != "map":  # map entries are data, not directives
            yield from walk(d.get("block", []))


def make_spec(tmp: Path, names: list[str], flavor: str = "openresty") -> Any:
    routes = "\n".join(
        f"  - {{path: /r{i}/, service: '{n}', websocket: {str(i % 2 == 0).lower()}}}"
        for i, n in enumerate(names)
    )
    # Every service feeds a stream too: its instances reach the stream {} block as well.
    streams = "\n".join(f"  - {{listen: {7000 + i}, service: '{n}'}}" for i, n in enumerate(names))
    text = (
        f"registry: {{kind: file, path: s.yaml}}\nnginx: {{listen: 8080, flavor: {flavor}}}\n"
        f"routes:\n{routes}\nstreams:\n{streams}\n"
    )
    return parse_spec(text, tmp / "nginxgen.yaml")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(REGISTRY, st.booleans(), st.data())
def test_registry_text_never_becomes_syntax(
    tmp_path: Path, services: dict[str, Any], as_json: bool, data: Any
) -> None:
    services = with_good_neighbours(services, data)
    raw = registry_file(services, as_json)
    catalog = parse_registry(raw, "s.yaml")  # never raises
    # A bad instance never takes its good neighbour with it. (Names as the file holds
    # them: PyYAML writes U+0085 unescaped and reads it back as a line break.)
    for name in load_data(raw, "s.yaml")["services"]:
        if name:
            assert GOOD["id"] in {i.id for i in catalog.services[safe_name(name)]}, name
    assert_no_syntax(tmp_path, catalog)
    # Whatever did not make it in was reported, not silently lost; no reason is huge.
    kept = sum(len(v) for v in catalog.services.values())
    if kept < sum(len(v) for v in services.values()):
        assert catalog.dropped
    assert all(len(str(d)) < 800 for d in catalog.dropped)


def assert_no_syntax(tmp_path: Path, catalog: Catalog) -> None:
    """The config built from this catalog holds only our directives, one server line per
    planned server."""
    spec = make_spec(tmp_path, sorted(catalog.services) or ["users"])
    result = build(spec, catalog, binary=None, cache=BuildCache(), now=datetime.now(timezone.utc))

    assert result.verdict.ok, result.verdict.findings
    parsed = parse_text(result.text, strict=True)
    assert parsed["errors"] == []
    directives = list(walk(parsed["config"][0]["parsed"]))
    assert {d["directive"] for d in directives} <= ALLOWED
    # Exactly one server line per planned server, each with the planned address.
    servers = [d["args"][0] for d in directives if d["directive"] == "server" and d.get("args")]
    stream = result.plan.surface.stream
    planned = [*result.plan.upstreams, *(stream.upstreams if stream else ())]
    static = [u for u in planned if not u.dynamic]
    dynamic = [u for u in planned if u.dynamic]
    want = [s.address for u in static for s in u.servers] + ["0.0.0.1"] * len(dynamic)
    assert sorted(servers) == sorted(want)
    if dynamic:
        # Dynamic upstreams' servers are data: the plan document decodes to exactly them.
        init = next(d for d in directives if d["directive"] == "init_by_lua_block")
        assert rendered_plan_document(init["args"][0]) == plan_document(result.plan)


def rendered_plan_document(lua: str) -> Any:
    """The JSON the rendered `plan = {"...", "..."}` pieces concatenate to."""
    pieces = re.search(r"plan = \{(.*?)\},\s*token_sha256", lua, re.S)
    assert pieces is not None
    text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', pieces.group(1)))
    text = re.sub(r"\\(\d{3}|.)", lambda m: chr(int(m[1])) if m[1].isdigit() else m[1], text)
    return json.loads(text)


# EndpointSlices as a hostile API server could send them: every field the adapter reads
# is hostile often enough, and valid often enough that some endpoints get through.
def mostly(good: Any, bad: Any = ANY) -> Any:
    """`good` four times in five, else `bad`."""
    return st.integers(0, 4).flatmap(lambda n: bad if n == 0 else good)


ENDPOINT = st.fixed_dictionaries(
    {
        "addresses": st.lists(
            mostly(st.sampled_from(["127.0.0.1", "fd00::1"]), HOSTILE), min_size=1, max_size=2
        )
    },
    optional={
        "conditions": mostly(
            st.dictionaries(
                st.sampled_from(["ready", "serving", "terminating"]), mostly(st.booleans())
            )
        ),
        "nodeName": mostly(st.just("node-1"), HOSTILE),
        "zone": mostly(st.just("zone-a"), HOSTILE),
        "targetRef": st.fixed_dictionaries(
            {"kind": mostly(st.just("Pod"), HOSTILE), "name": st.one_of(HOSTILE, st.integers())}
        ),
    },
)
PORT = st.fixed_dictionaries(
    {"port": mostly(st.integers(1, 65535), st.one_of(st.integers(), ANY))},
    optional={
        "name": mostly(st.just("http"), HOSTILE),
        "protocol": mostly(st.just("TCP"), HOSTILE),
    },
)
SLICE = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "name": HOSTILE,
                "labels": st.fixed_dictionaries(
                    {"kubernetes.io/service-name": mostly(st.just("users"), HOSTILE)}
                ),
            }
        ),
        "addressType": mostly(st.sampled_from(["IPv4", "IPv6", "FQDN"]), HOSTILE),
        "ports": mostly(st.lists(PORT, min_size=1, max_size=1), st.lists(PORT, max_size=3)),
        "endpoints": mostly(st.lists(ENDPOINT, max_size=4)),
    }
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(SLICE, min_size=1, max_size=4), st.sampled_from([None, "http"]))
def test_endpoint_slices_never_become_syntax(tmp_path: Path, slices: list[Any], port: Any) -> None:
    builder = CatalogBuilder("kubernetes")
    add_slices(builder, slices, KubernetesRegistry(kind="kubernetes", port=port))
    assert_no_syntax(tmp_path, builder.build())


@pytest.mark.requires("nginx")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REGISTRY, st.booleans())
def test_nginx_accepts_whatever_survives_the_catalog(
    services: dict[str, Any], as_json: bool
) -> None:
    catalog = parse_registry(registry_file(services, as_json), "s.yaml")
    tmp = Path("/tmp")
    install = require_nginx("stream")
    spec = make_spec(tmp, sorted(catalog.services) or ["users"], install.flavor)
    result = build(spec, catalog, binary=install.binary, cache=BuildCache())
    # DNS names that do not resolve are the only acceptable nginx -t failure.
    problems = [
        f
        for f in result.verdict.findings
        if "host not found in upstream" not in f.message and "test failed" not in f.message
    ]
    assert problems == [], problems


# --- every adapter, not only the file registry ------------------------------------------
# Registries answer JSON: anything JSON can hold, in place of any value of a real answer.
JSON_SCALAR = st.one_of(HOSTILE, NUMBERS, ODD_TEXT, st.none(), st.booleans())
JSON_ANY = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def perturbed(good: Any) -> st.SearchStrategy[Any]:
    """`good` with any of its values, at any depth, replaced by anything JSON can hold."""
    if isinstance(good, dict):
        same: st.SearchStrategy[Any] = st.fixed_dictionaries(
            {k: perturbed(v) for k, v in good.items()}
        )
    elif isinstance(good, list):
        same = st.tuples(*(perturbed(v) for v in good)).map(list)
    else:
        same = st.just(good)
    return st.one_of(same, same, JSON_ANY)


# The values that broke conversions, put into every field of a real answer, one at a time.
EDGES: list[Any] = [
    None, True, 0, -1, 10**300, 10**400, 1e300, float("inf"), float("-inf"), float("nan"),
    "", "٨٠", "²", "８０", "1e999", "inf", "9" * 400, "x" * 5000, "a\nb", "}", [], [1, [2]],
    {}, {"$": "²"}, "9999-12-31T23:59:59-23:59", "2026-13-45T10:00:00Z",
]  # fmt: skip


def each_leaf_replaced(good: Any, values: list[Any]) -> Iterator[Any]:
    """`good` with one value (a leaf, or a whole list or mapping) replaced, every way."""
    yield from values
    if isinstance(good, dict):
        for k, v in good.items():
            for changed in each_leaf_replaced(v, values):
                yield {**good, k: changed}
    elif isinstance(good, list):
        for n, v in enumerate(good):
            for changed in each_leaf_replaced(v, values):
                yield [*good[:n], changed, *good[n + 1 :]]


FILE_EDGES = [
    *EDGES,
    datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=23))),
    datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23))),
    datetime(2000, 1, 1, tzinfo=timezone(timedelta(microseconds=1))),
    date(2026, 11, 29),
    datetime(2026, 11, 29, 10),
]
FILE_SHAPES = [
    {"id": "u1", "address": "127.0.0.1:80", "weight": 2, "state": "up",
     "registered_at": "2026-11-29T10:00:00Z", "tags": ["v2"], "meta": {"zone": "a"}},
    {"id": "u1", "host": "127.0.0.1", "port": 80},
]  # fmt: skip


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
def test_the_file_registry_takes_any_edge_value_in_any_field(as_json: bool) -> None:
    good = [dict(GOOD, id="known-good-1"), dict(GOOD, id="known-good-2", address="10.0.0.2:80")]
    for shape in FILE_SHAPES:
        for entry in each_leaf_replaced(shape, FILE_EDGES):
            raw = registry_file({"users": [good[0], entry, good[1]]}, as_json)
            catalog = parse_registry(raw, "s.yaml")
            assert {"known-good-1", "known-good-2"} <= {i.id for i in catalog.services["users"]}
            assert all(len(str(d)) < 800 for d in catalog.dropped)


ADAPTER_SETTINGS = settings(max_examples=150, deadline=None)


def survivors(builder: CatalogBuilder, service: str) -> set[str]:
    catalog = builder.build()
    assert all(len(str(d)) < 800 for d in catalog.dropped)
    return {i.id for i in catalog.services.get(service, ())}


CONSUL_GOOD = consul_entry("users", "s1", "127.0.0.1", 80, tags=("v1",), meta={"zone": "a"})


def consul_survivors(entries: list[Any]) -> set[str]:
    first = consul_entry("users", "known-good-1", "127.0.0.254", 9001)
    last = consul_entry("users", "known-good-2", "127.0.0.253", 9002)
    builder = CatalogBuilder("consul:test")
    add_entries(builder, "users", [first, *entries, last], "up")
    return survivors(builder, "users")


def test_consul_takes_any_edge_value_in_any_field() -> None:
    for entry in each_leaf_replaced(CONSUL_GOOD, EDGES):
        assert {"known-good-1", "known-good-2"} <= consul_survivors([entry, entry])


@ADAPTER_SETTINGS
@given(st.lists(perturbed(CONSUL_GOOD), max_size=4))
def test_consul_entries_never_raise_and_spare_their_neighbours(entries: list[Any]) -> None:
    assert {"known-good-1", "known-good-2"} <= consul_survivors(entries)


NACOS_GOOD = nacos_host("127.0.0.1", 80, "users", metadata={"zone": "a", "weight": "2"})


def nacos_survivors(hosts: list[Any]) -> set[str]:
    first, last = nacos_host("127.0.0.254", 9001, "users"), nacos_host("127.0.0.253", 9002, "users")
    builder = CatalogBuilder("nacos:test")
    add_hosts(builder, "users", [first, *hosts, last])
    return survivors(builder, "users")


def test_nacos_takes_any_edge_value_in_any_field() -> None:
    for host in each_leaf_replaced(NACOS_GOOD, EDGES):
        assert {"127.0.0.254:9001", "127.0.0.253:9002"} <= nacos_survivors([host])


@ADAPTER_SETTINGS
@given(st.lists(perturbed(NACOS_GOOD), max_size=4))
def test_nacos_hosts_never_raise_and_spare_their_neighbours(hosts: list[Any]) -> None:
    assert {"127.0.0.254:9001", "127.0.0.253:9002"} <= nacos_survivors(hosts)


EUREKA_GOOD = eureka_instance("USERS", "127.0.0.1", 80, metadata={"weight": "2"})
EUREKA_FIRST = eureka_instance("USERS", "127.0.0.254", 9001)
EUREKA_LAST = eureka_instance("USERS", "127.0.0.253", 9002)
EUREKA_KEPT = {EUREKA_FIRST["instanceId"], EUREKA_LAST["instanceId"]}


def eureka_survivors(instances: list[Any], prefer_ip: bool = True) -> set[str]:
    app = {"name": "USERS", "instance": [EUREKA_FIRST, *instances, EUREKA_LAST]}
    builder = CatalogBuilder("eureka:test")
    assert parse_apps({"applications": {"application": [app]}}, builder, "/apps", prefer_ip)
    return survivors(builder, "users")


def test_eureka_takes_any_edge_value_in_any_field() -> None:
    for instance in each_leaf_replaced(EUREKA_GOOD, EDGES):
        assert EUREKA_KEPT <= eureka_survivors([instance])


@ADAPTER_SETTINGS
@given(st.lists(perturbed(EUREKA_GOOD), max_size=4), st.booleans())
def test_eureka_instances_never_raise_and_spare_their_neighbours(
    instances: list[Any], prefer_ip: bool
) -> None:
    assert EUREKA_KEPT <= eureka_survivors(instances, prefer_ip)


ETCD_VALUE = {
    "address": "127.0.0.1:80", "weight": 2, "state": "up",
    "registered_at": "2026-11-29T10:00:00Z", "tags": ["v2"], "meta": {"zone": "a"},
}  # fmt: skip


def etcd_kv(instance: str, value: Any) -> dict[str, Any]:
    return {"key": b64(f"/svc/users/{instance}".encode()), "value": b64(json.dumps(value).encode())}


def etcd_survivors(kvs: list[Any]) -> set[str]:
    builder = CatalogBuilder("etcd:test")
    first = etcd_kv("known-good-1", {"address": "127.0.0.254:9001"})
    last = etcd_kv("known-good-2", {"address": "127.0.0.253:9002"})
    for kv in [first, *kvs, last]:
        add_kv(builder, "/svc/", kv)
    return survivors(builder, "users")


def test_etcd_takes_any_edge_value_in_any_field() -> None:
    for value in each_leaf_replaced(ETCD_VALUE, EDGES):
        assert {"known-good-1", "known-good-2"} <= etcd_survivors([etcd_kv("i1", value)])
    # The range entry itself: a key or value that is not base64 text, or not there.
    for kv in each_leaf_replaced(etcd_kv("i1", ETCD_VALUE), EDGES):
        assert {"known-good-1", "known-good-2"} <= etcd_survivors([kv])


@ADAPTER_SETTINGS
@given(
    st.lists(st.one_of(perturbed(ETCD_VALUE), JSON_ANY), max_size=4), st.lists(JSON_ANY, max_size=2)
)
def test_etcd_values_never_raise_and_spare_their_neighbours(
    values: list[Any], raw_kvs: list[Any]
) -> None:
    kvs = [etcd_kv(f"i{n}", v) for n, v in enumerate(values)]
    kvs += [{"key": b64(b"/svc/users/raw"), "value": kv} for kv in raw_kvs]
    assert {"known-good-1", "known-good-2"} <= etcd_survivors(kvs)
