"""Cache spec → plan → rendered config, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.cache import lua_config
from nginxgen.catalog import Catalog
from nginxgen.nginx_parse import parse_text
from nginxgen.pipeline import plan_uses_lua
from nginxgen.plan import make_plan
from nginxgen.render import RenderError, lua_value, render
from nginxgen.spec import SpecError, parse_spec
from nginxgen.verify import verify

BASE = """
registry: {kind: file, path: services.yaml}
nginx: {flavor: openresty, listen: 8080, server_name: api.example.com}
"""


def spec(text: str):
    return parse_spec(BASE + text, Path("/etc/gw/nginxgen.yaml"))


def catalog(*services: str) -> Catalog:
    from nginxgen.catalog import Instance

    one = {s: (Instance(id=f"{s}-1", service=s, host="127.0.0.1", port=9000),) for s in services}
    return Catalog(services=one)


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
            "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s, l1: {ttl: 5s}}}]",
            "longer than the cache ttl",
        ),
        (
            "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s, headers: [Set-Cookie]}}]",
            "never stored",
        ),
        (
            "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s, statuses: [99]}}]",
            "statuses",
        ),
        (
            "redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s, max_body: lots}}]",
            "not a size",
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
    assert down.cache is None and plain.cache is None  # a 503 route has nothing to cache
    cfg = lua_config(plan.cache)
    assert cfg["redis"]["read_timeout"] == 150
    assert cfg["routes"]["/a/"]["headers"] == ["Content-Type", "ETag"]

    text = render(plan, s.nginx)
    assert "load_module" not in text  # OpenResty has Lua built in
    assert "env GW_REDIS_PASSWORD;" in text
    assert 'access_by_lua_block { require("nginxgen.cache").access("/a/") }' in text
    assert 'access_by_lua_block { require("nginxgen.cache").access("=/b/") }' in text
    assert "lua_shared_dict nginxgen_l1_0 2m;" in text
    assert text.count("access_by_lua_block") == 2
    verdict = verify(text, plan)
    assert verdict.ok, verdict.findings
    http = parse_text(text)["config"][0]["parsed"]
    directives = [d["directive"] for d in http if d["directive"] == "env"]
    assert directives == ["env"]


def test_no_cached_route_means_no_lua():
    s = spec("redis: {}\nroutes: [{path: /a/, service: a, cache: {ttl: 1s}}]")
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
