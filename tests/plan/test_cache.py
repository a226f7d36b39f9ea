"""Cache spec → plan → rendered config, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.model.catalog import Catalog
from nginxgen.pipeline import plan_uses_lua
from nginxgen.plan import make_plan
from nginxgen.plan.cache import lua_config
from nginxgen.render import RenderError, lua_value, render
from nginxgen.spec import SpecError, parse_spec
from nginxgen.verify import verify
from nginxgen.verify.parse import parse_text

BASE = """
registry: {kind: file, path: services.yaml}
nginx: {flavor: openresty, listen: 8080, server_name: api.example.com}
"""


def spec(text: str):
    return parse_spec(BASE + text, Path("/etc/gw/nginxgen.yaml"))


def catalog(*services: str) -> Catalog:
    from nginxgen.model.catalog import Instance

    one = {s: (Instance(id=f"{s}-1", service=s, host="127.0.0.1", port=9000),) for s in services}
    return Catalog(services=one)


def cached(settings: str) -> str:
    """A spec tail with one cached route /a/ (ttl 1s) and these extra cache settings."""
    return f"redis: {{}}\nroutes: [{{path: /a/, service: a, cache: {{ttl: 1s, {settings}}}}}]"


def errors(text: str) -> str:
    with pytest.raises(SpecError) as exc:
        spec(text)
    return str(exc.value)


def test_a_cache_without_redis_is_a_spec_error_naming_the_route():
    msg = errors("routes: [{path: /a/, service: a, cache: {ttl: 5s}}]")
    assert "/a/" in msg and "redis:" in msg and "nginxgen.yaml" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis: {password_env: 'hunter2!'}", "NAME of an environment variable"),
        ("redis: {read_timeout: 100}", "100ms"),
        ("redis: {port: 70000}", "redis.port"),
        ("redis: {key_prefix: 'a b'}", "redis.key_prefix"),
        ("redis: {}\nroutes: [{path: /a/, service: a, cache: {}}]", "routes[0].cache.ttl"),
        (
            cached("l1: {ttl: 5s}"),
            "longer than the cache ttl",
        ),
        (
            cached("headers: [Set-Cookie]"),
            "never stored",
        ),
        (
            cached("statuses: [99]"),
            "statuses",
        ),
        (
            cached("max_body: lots"),
            "not a size",
        ),
        (
            "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 99999999999999d}}]",
            "routes[0].cache.ttl: must be at most 365d",
        ),
        (
            cached("l1: {ttl: 400d}"),
            "routes[0].cache.l1.ttl: must be at most 365d",
        ),
        (
            "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1.0e+400}}]",
            "routes[0].cache.ttl: must be at most 365d",
        ),
        (
            cached("stampede_wait: 5m"),
            "routes[0].cache.stampede_wait: must be at most 60s",
        ),
        (
            cached("statuses: [200, 206]"),
            "[206] answer one client's Range",
        ),
        (
            cached("statuses: [304]"),
            "never stored",
        ),
        (
            cached("bypass_credentials: false"),
            "say so with shared_for_credentials: true",
        ),
        (
            cached("shared_for_credentials: true"),
            "only applies with bypass_credentials: false",
        ),
        (
            cached("key_headers: [Host]"),
            "Host cannot be a key header: use cache.use_request_host",
        ),
        (
            cached("key_headers: [X-Forwarded-Prefix]"),
            "X-Forwarded-Prefix cannot be a key header",
        ),
        (
            cached("key_headers: [x_tenant]"),
            "routes[0].cache.key_headers[0]: not an HTTP header name",
        ),
        (
            cached("key_headers: [X-T, x-t]"),
            "listed twice",
        ),
        (
            cached("vary_on_identity: true"),
            "vary_on_identity: true needs an identity",
        ),
        (
            "redis: {}\nroutes: [{path: /a/, service: a, auth: {url: 'http://127.0.0.1:9/v', "
            "forward_headers: [X-User-Id]}, cache: {ttl: 1s, vary_on_identity: false}}]",
            "routes[0]: cache.vary_on_identity: false would serve one user's answer to another",
        ),
    ],
)
def test_bad_cache_settings_are_named(text, expected):
    if "routes:" not in text:
        text += "\nroutes: [{path: /a/, service: a}]"
    msg = errors(text)
    assert expected in msg, msg
    assert "Traceback" not in msg


def test_the_plan_keys_on_the_configured_host_and_renders_one_line_calls():
    s = spec(
        """
redis: {host: 10.0.0.5, port: 6380, db: 2, password_env: GW_REDIS_PASSWORD, read_timeout: 150ms}
routes:
  - {path: /a/, service: a, cache: {ttl: 30s, headers: [ETag], l1: {ttl: 500ms, size: 2m}}}
  - {path: /b/, service: b, exact: true, cache: {ttl: 1m, use_request_host: true}}
  - {path: /down/, service: gone, cache: {ttl: 1m}}
  - {path: /plain/, service: a}
"""
    )
    plan = make_plan(s, catalog("a", "b"))
    assert plan_uses_lua(plan)
    a, b, down, plain = plan.locations
    assert a.cache and a.cache.key_host == "api.example.com" and a.cache.l1_dict
    assert b.cache and b.cache.key_host is None and b.cache.id == "=/b/"
    # a 503 route has nothing to cache (dynamic mode: the route stays, Lua answers 503)
    assert (down.cache is None) is (down.upstream is None) and plain.cache is None
    cfg = lua_config(plan.cache)
    assert cfg["redis"]["read_timeout"] == 150
    assert "headers" not in cfg["routes"]["/a/"]  # every response header is stored now
    assert (
        "route '/a/': cache.headers is obsolete and ignored: every response header is stored "
        "except hop-by-hop ones and Set-Cookie"
    ) in plan.notes
    # The Host the key holds is the Host sent; the client's Host only where the key has it.
    assert a.upstream_host == "api.example.com" and b.upstream_host is None
    assert "X-Original-URL" in a.cleared_headers and "X-Original-URL" not in plain.cleared_headers
    assert "Forwarded" in plain.cleared_headers

    text = render(plan, s.nginx)
    assert "load_module" not in text  # OpenResty has Lua built in
    assert "env GW_REDIS_PASSWORD;" in text
    assert 'access_by_lua_block { require("nginxgen.cache").access("/a/") }' in text
    assert 'access_by_lua_block { require("nginxgen.cache").access("=/b/") }' in text
    assert "lua_shared_dict nginxgen_l1_0 2m;" in text
    # /down/ too in dynamic mode: its route stays (Lua answers 503 before the cache runs)
    assert text.count("access_by_lua_block") == (3 if s.nginx.dynamic else 2)
    verdict = verify(text, plan)
    assert verdict.ok, verdict.findings
    http = parse_text(text)["config"][0]["parsed"]
    directives = [d["directive"] for d in http if d["directive"] == "env"]
    assert directives == ["env"]


def test_no_cached_route_and_metrics_off_mean_no_lua():
    text = BASE.replace("server_name:", "metrics: false, server_name:")
    s = parse_spec(
        text + "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s}}]",
        Path("/etc/gw/nginxgen.yaml"),
    )
    plan = make_plan(s, catalog())  # the cached service has nobody alive
    assert not plan_uses_lua(plan)
    assert "lua" not in render(plan, s.nginx)


@pytest.mark.parametrize(
    "hostile",
    ['"}) os.execute("x") --', "]] ; $var {", "line\nbreak", "#comment", "\\\"'"],
)
def test_lua_literals_keep_data_data(hostile):
    literal = lua_value({"k": hostile, hostile: [1, 2.5, True, None]})
    # Only the table's own braces and no raw quote, brace or newline from the data survive.
    assert literal.count("{") == literal.count("}") == 2
    inner = literal.replace('\\"', "")
    assert "\n" not in literal and "$" not in literal and ";" not in literal
    assert inner.count('"') == 6  # three strings, each opened and closed once


def test_lua_literals_refuse_what_lua_cannot_hold():
    with pytest.raises(RenderError):
        lua_value(float("nan"))
    with pytest.raises(RenderError):
        lua_value(object())


def test_verify_catches_a_location_calling_another_routes_cache():
    s = spec(
        """
redis: {}
routes:
  - {path: /a/, service: a, cache: {ttl: 1s}}
  - {path: /b/, service: a, cache: {ttl: 1s}}
  - {path: /c/, service: a}
"""
    )
    plan = make_plan(s, catalog("a"))
    text = render(plan, s.nginx)
    assert verify(text, plan).ok
    swapped = text.replace('access("/b/")', 'access("/a/")')
    findings = verify(swapped, plan).findings
    assert len(findings) == 1 and "'/b/' runs Lua" in findings[0].message
    # Lua smuggled into an uncached location is caught too.
    marker = "proxy_next_upstream_tries 2;\n"
    last = text.rindex(marker)
    smuggled = text[:last] + marker + "            log_by_lua_block { os.exit() }\n"
    smuggled += text[last + len(marker) :]
    assert any("'/c/' runs Lua" in f.message for f in verify(smuggled, plan).findings)


def test_identity_the_gateway_forwards_is_keyed_on_by_default(tmp_path):
    (tmp_path / "keys.txt").write_text("k1\n")
    s = parse_spec(
        BASE
        + f"""
redis: {{}}
routes:
  - path: /u/
    service: a
    auth: {{url: "http://127.0.0.1:9400/verify", forward_headers: [X-User-Id, X-Forwarded-Prefix]}}
    cache: {{ttl: 1s}}
  - {{path: /k/, service: a, auth: {{api_keys: {{file: {tmp_path}/keys.txt}}}}, cache: {{ttl: 1s}}}}
  - path: /s/
    service: a
    auth: {{api_keys: {{file: {tmp_path}/keys.txt}}}}
    cache: {{ttl: 1s, vary_on_identity: false, key_headers: [X-Tenant, X-Host]}}
""",
        tmp_path / "nginxgen.yaml",
    )
    u, k, shared = make_plan(s, catalog("a")).locations
    assert u.cache and u.cache.identity_vars == (
        "nginxgen_auth_0_x_user_id",
        "nginxgen_auth_0_x_forwarded_prefix",
    )
    assert k.cache and k.cache.identity_vars == ("nginxgen_key_digest",)
    assert shared.cache and shared.cache.identity_vars == ()
    assert shared.cache.key_headers == ("X-Tenant", "X-Host")
    assert "X-Host" not in shared.cache.stripped and "X-Host" in u.cache.stripped
    # A header the auth service sets is not also cleared (nginx would send both lines).
    assert "X-Forwarded-Prefix" not in u.cleared_headers
    text = render(make_plan(s, catalog("a")), s.nginx)
    block = text[text.index("location /u/ {") : text.index("location /k/ {")]
    assert "proxy_set_header X-Forwarded-Prefix $nginxgen_auth_0_x_forwarded_prefix;" in block
    assert 'X-Forwarded-Prefix ""' not in block
    cfg = lua_config(make_plan(s, catalog("a")).cache)
    assert cfg["routes"]["/s/"]["key_headers"] == ["x-tenant", "x-host"]


def test_a_catch_all_server_keys_on_and_sends_the_clients_host():
    s = parse_spec(
        BASE.replace("server_name: api.example.com", "server_name: _")
        + "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s}},"
        " {path: /b/, service: a, cache: {ttl: 1s, host: shop.example}}]",
        Path("/etc/gw/nginxgen.yaml"),
    )
    a, b = make_plan(s, catalog("a")).locations
    assert a.cache and a.cache.key_host is None and a.upstream_host is None
    assert b.cache and b.cache.key_host == "shop.example" == b.upstream_host


def test_verify_catches_a_cached_route_sending_another_host_or_an_unkeyed_header():
    s = spec(
        "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s}}, {path: /b/, service: a}]"
    )
    plan = make_plan(s, catalog("a"))
    text = render(plan, s.nginx)
    assert verify(text, plan).ok
    spoofable = text.replace(
        "proxy_set_header Host api.example.com;", "proxy_set_header Host $host;"
    )
    (finding,) = verify(spoofable, plan).findings
    assert finding.message == "route '/a/' sends host other than planned"
    leaky = text.replace('proxy_set_header X-Original-URL "";\n', "", 1)
    assert [f.message for f in verify(leaky, plan).findings] == [
        "route '/a/' sends x-original-url other than planned"
    ]
    doubled = text.replace(
        'proxy_set_header Forwarded "";\n',
        'proxy_set_header Forwarded "";\n            proxy_set_header Forwarded $http_forwarded;\n',
    )
    assert {f.message for f in verify(doubled, plan).findings} == {
        "route '/a/' sends forwarded other than planned",
        "route '/b/' sends forwarded other than planned",
    }
