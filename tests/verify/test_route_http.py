"""The round trip for methods, rewrite, header changes, CORS and upstream TLS: the text
nginxgen renders passes, and every way of rendering a route other than planned fails.
Header values and origins the spec accepts stay one token each, whatever they hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import Build, BuildCache, build
from nginxgen.render import RenderError
from nginxgen.render.filters import rewrite_to
from nginxgen.spec import parse_spec
from nginxgen.verify import verify
from tests.helpers.certs import NOW, make_ca, make_cert, write_pair

ROUTES = """\
  - {path: /m/, service: a, methods: [GET, POST]}
  - {path: /rw/, service: a, rewrite: {from: '^/rw/v1/(\\d+)/(.*)$', to: /v2/$2/$1}}
  - path: /h/
    service: a
    headers:
      request: {set: {X-Tenant: 'blue "sky"', Host: a.internal}, remove: [Cookie]}
      response: {set: {Cache-Control: no-store}, remove: [X-Powered-By]}
  - path: /c/
    service: a
    methods: [GET, PUT]
    cors: {origins: ['https://app.test', 'https://*.example.test'], credentials: true,
           expose_headers: [X-Count]}
  - {path: /s/, service: s, upstream_tls: {ca: ca.pem, sni: s.internal, client_cert: gw.pem,
     client_key: gw.key}}
"""


def spec_text(routes: str = ROUTES) -> str:
    return f"registry: {{kind: file, path: s.yaml}}\nnginx: {{listen: 8080}}\nroutes:\n{routes}"


def catalog():
    b = CatalogBuilder("t")
    b.add("a", id="a1", address="127.0.0.1:9001")
    b.add("s", id="s1", address="127.0.0.1:9002")
    return b.build()


def make(tmp_path: Path, text: str) -> Build:
    ca = make_ca()
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    write_pair(tmp_path, "gw", [make_cert(["gw"], issuer=ca, client=True)])
    spec = parse_spec(text, tmp_path / "nginxgen.yaml")
    return build(spec, catalog(), binary=None, cache=BuildCache(), now=NOW)


@pytest.fixture
def built(tmp_path: Path) -> Build:
    return make(tmp_path, spec_text())


def test_the_rendered_text_passes(built: Build) -> None:
    assert built.verdict.ok, built.verdict.findings
    text = built.text
    assert 'rewrite "^/rw/v1/(\\\\d+)/(.*)$" "/v2/$2/$1" break;' in text
    assert "proxy_pass https://s;" in text and "proxy_ssl_verify on;" in text
    assert "location @nginxgen_405 {" in text


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # methods: a check that lets everything through, or another Allow
        ("if ($nginxgen_methods_0 = 0)", "if ($nginxgen_methods_0 = 2)", "405 answers"),
        ("set $nginxgen_allow 'GET, POST, HEAD';", "", "405 answers"),
        ("        POST 1;\n", "        POST 1;\n        DELETE 1;\n", "map $nginxgen_methods_0"),
        ("add_header Allow $nginxgen_allow always;", "", "@nginxgen_405 is not as planned"),
        # rewrite
        ('"/v2/$2/$1" break;', '"/v2/$1/$2" break;', "rewrites"),
        # headers
        ("proxy_set_header X-Tenant 'blue \"sky\"';", "", "sends x-tenant"),
        ("proxy_set_header Host a.internal;", "proxy_set_header Host $host;", "sends host"),
        ('proxy_set_header Cookie "";', "", "sends cookie"),
        ("add_header Cache-Control no-store always;", "", "response headers"),
        ("proxy_hide_header X-Powered-By;", "", "response headers"),
        # CORS: one more origin, a preflight proxied, a credentials header for everyone
        (
            '"https://app.test" "https://app.test";',
            '"https://app.test" "https://app.test";\n        https://evil.test https://evil.test;',
            "map $nginxgen_cors_0",
        ),
        ("if ($nginxgen_cors_0_preflight = 2) {", "if ($nginxgen_cors_0_preflight = 3) {", "CORS"),
        (
            "add_header Access-Control-Allow-Credentials $nginxgen_cors_0_credentials always;",
            "add_header Access-Control-Allow-Credentials true always;",
            "response headers",
        ),
        # upstream TLS: no verification, another CA, plain HTTP
        ("proxy_ssl_verify on;", "proxy_ssl_verify off;", "upstream TLS"),
        ("proxy_ssl_trusted_certificate", "proxy_ssl_certificate_key /x;\n#", "upstream TLS"),
        ("proxy_pass https://s;", "proxy_pass http://s;", "proxies to"),
    ],
)
def test_a_route_rendered_other_than_planned_fails(
    built: Build, old: str, new: str, complaint: str
) -> None:
    text = built.text
    if '"https://app.test" "https://app.test";' in old:
        old = old.replace(
            '"https://app.test" "https://app.test"', "https://app.test https://app.test"
        )
        new = new.replace(
            '"https://app.test" "https://app.test"', "https://app.test https://app.test"
        )
    assert old in text, old
    # The last one: a route's own 503 page, rendered before the routes, repeats its headers.
    head, _, tail = text.rpartition(old)
    verdict = verify(head + new + tail, built.plan)
    assert not verdict.ok
    assert any(complaint in str(f) for f in verdict.findings), verdict.findings


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        # the route's own 503 without its CORS header: a browser app could not read it
        (
            "add_header Access-Control-Allow-Origin $nginxgen_cors_0 always;",
            "",
            "its @nginxgen_503_3 is not as planned",
        ),
        # the route's 500 sent to the server's page, which carries the server's headers only
        ("error_page 500 = @nginxgen_503_3;", "error_page 500 = @nginxgen_503;", "nobody to serve"),
        ("location @nginxgen_503_3 {", "location @nginxgen_503_9 {", "unplanned @nginxgen_503_9"),
    ],
)
def test_a_routes_own_nobody_page_other_than_planned_fails(
    built: Build, old: str, new: str, complaint: str
) -> None:
    # nginx.endpoints dynamic (the default here): a route with headers has its own page.
    assert "location @nginxgen_503 {" in built.text  # /m/ and /rw/ add no headers
    assert old in built.text, old
    verdict = verify(built.text.replace(old, new, 1), built.plan)
    assert not verdict.ok
    assert any(complaint in str(f) for f in verdict.findings), verdict.findings


def test_rewrite_to_lets_only_captures_through() -> None:
    assert rewrite_to("/v2/$1/x") == '"/v2/$1/x"'
    for bad in ("/$host", "/a b", '/a"', "/a;b", "/$10", "x"):
        with pytest.raises(RenderError):
            rewrite_to(bad)


# Printable ASCII the spec accepts in a header value: everything but `$`.
VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="$"),
    min_size=1,
    max_size=40,
)
LABELS = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=VALUES, response=VALUES, label=LABELS, wildcard=st.booleans())
def test_header_values_and_origins_stay_one_token(
    tmp_path: Path, request: str, response: str, label: str, wildcard: bool
) -> None:
    origin = f"https://{'*.' if wildcard else ''}{label}.test"
    headers = {
        "request": {"set": {"X-A": request}},
        "response": {"set": {"X-B": response}},
    }
    cors = {"origins": [origin, "https://fixed.example"]}
    route = {"path": "/", "service": "a", "headers": headers, "cors": cors}
    text = spec_text(f"  - {json.dumps(route)}\n")
    b = make(tmp_path, text)
    # The round trip compares every argument as nginx reads it with the plan's value: a
    # value that escaped its token would be a changed argument or an extra statement.
    assert b.verdict.ok, (b.verdict.findings, request, response)
    (loc,) = b.plan.locations
    assert loc.http is not None and loc.http.request_set == (("X-A", request),)
    assert loc.http.response_set == (("X-B", response),)


def test_regex_routes_and_rewrites_with_backslashes_pass(tmp_path: Path) -> None:
    """crossplane keeps the escapes nginx resolves: `\\\\d` in the file is nginx's `\\d`."""
    routes = (
        "  - {path: '^/rx/\\d+/\"q\"$', match: regex, service: a}\n"
        "  - {path: /r/, service: a, rewrite: {from: '^/r/(\\w+)\\.json$', to: /j/$1}}\n"
    )
    b = make(tmp_path, spec_text(routes))
    assert b.verdict.ok, b.verdict.findings
    assert 'location ~ "^/rx/\\\\d+/\\"q\\"$" {' in b.text
