"""Registry data never becomes nginx syntax, whatever the registry says."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nginxgen.catalog import Catalog, CatalogBuilder
from nginxgen.nginx_bin import Binary
from nginxgen.nginx_parse import parse_text
from nginxgen.pipeline import build
from nginxgen.sources.endpointslices import add_slices
from nginxgen.sources.file import parse_registry
from nginxgen.spec import KubernetesRegistry, parse_spec

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
ANY = st.one_of(HOSTILE, st.integers(), st.floats(allow_nan=True), st.none(), st.booleans())
INSTANCE = st.fixed_dictionaries(
    {"id": st.one_of(HOSTILE, st.integers()), "address": ADDRESS},
    optional={
        "weight": ANY,
        "state": st.one_of(st.sampled_from(["up", "starting", "draining", "down"]), HOSTILE),
        "registered_at": ANY,
        "tags": st.lists(HOSTILE, max_size=3),
        "meta": st.dictionaries(HOSTILE, HOSTILE, max_size=3),
    },
)
REGISTRY = st.dictionaries(
    st.one_of(HOSTILE, st.just("users")), st.lists(INSTANCE, max_size=4), min_size=1, max_size=4
)

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
}  # fmt: skip


def walk(block: list[dict[str, Any]]):
    for d in block:
        yield d
        if d["directive"] != "map":  # map entries are data, not directives
            yield from walk(d.get("block", []))


def make_spec(tmp: Path, names: list[str]) -> Any:
    routes = "\n".join(f"  - {{path: /r{i}/, service: '{n}'}}" for i, n in enumerate(names))
    text = f"registry: {{kind: file, path: s.yaml}}\nnginx: {{listen: 8080}}\nroutes:\n{routes}\n"
    return parse_spec(text, tmp / "nginxgen.yaml")


NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(REGISTRY)
def test_registry_text_never_becomes_syntax(tmp_path: Path, services: dict[str, Any]) -> None:
    raw = yaml.safe_dump({"services": services}, allow_unicode=True).encode()
    catalog = parse_registry(raw, "s.yaml")
    assert_no_syntax(tmp_path, catalog)
    # Whatever did not make it in was reported, not silently lost.
    kept = sum(len(v) for v in catalog.services.values())
    if kept < sum(len(v) for v in services.values()):
        assert catalog.dropped


def assert_no_syntax(tmp_path: Path, catalog: Catalog) -> None:
    """The config built from this catalog holds only our directives, one server line per
    planned server."""
    spec = make_spec(tmp_path, sorted(catalog.services) or ["users"])
    result = build(spec, catalog, binary=None)

    assert result.verdict.ok, result.verdict.findings
    parsed = parse_text(result.text, strict=True)
    assert parsed["errors"] == []
    directives = list(walk(parsed["config"][0]["parsed"]))
    assert {d["directive"] for d in directives} <= ALLOWED
    # Exactly one server line per planned server, each with the planned address.
    servers = [d["args"][0] for d in directives if d["directive"] == "server" and d.get("args")]
    assert sorted(servers) == sorted(s.address for u in result.plan.upstreams for s in u.servers)


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


@pytest.mark.skipif(NGINX is None, reason="nginx binary not installed")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REGISTRY)
def test_nginx_accepts_whatever_survives_the_catalog(services: dict[str, Any]) -> None:
    raw = yaml.safe_dump({"services": services}, allow_unicode=True).encode()
    catalog = parse_registry(raw, "s.yaml")
    tmp = Path("/tmp")
    spec = make_spec(tmp, sorted(catalog.services) or ["users"])
    result = build(spec, catalog, binary=Binary(str(NGINX), "nginx"))
    # DNS names that do not resolve are the only acceptable nginx -t failure.
    problems = [
        f
        for f in result.verdict.findings
        if "host not found in upstream" not in f.message and "test failed" not in f.message
    ]
    assert problems == [], problems
