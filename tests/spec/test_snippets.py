"""nginxgen/spec/snippets.py: a snippet parses alone in its context, stays inside its
block, and hands back crossplane's statements for the round-trip check."""

from __future__ import annotations

import pytest

from nginxgen.spec.snippets import SnippetError, parse_snippet, statement_shape


@pytest.mark.parametrize(
    ("context", "text", "first"),
    [
        ("http", "map $request_method $x { default a; GET b; }", "map"),
        ("http", "log_format short '$remote_addr $status';", "log_format"),
        ("server", "location = /ping { return 200 pong; }", "location"),
        ("location", 'add_header X-Y "$x,$y" always;', "add_header"),
        ("location", "content_by_lua_block { ngx.say('}') }", "content_by_lua_block"),
        ("location", "if ($request_method = POST) { return 405; }", "if"),
        ("upstream", "keepalive_timeout 30s;", "keepalive_timeout"),
        ("stream", "upstream extra { server 127.0.0.1:7001; }", "upstream"),
        ("stream_server", "proxy_timeout 5s;\nssl_preread on;", "proxy_timeout"),
    ],
)
def test_snippets_that_fit_their_context_parse(context, text, first):
    statements = parse_snippet(text, context)
    assert statements[0]["directive"] == first
    assert statements[0]["line"] == 1


def test_lines_count_from_the_snippet_and_blocks_are_kept():
    statements = parse_snippet("set $a 1;\n\nlocation /x {\n  return 204;\n}\n", "server")
    assert [(s["directive"], s["line"]) for s in statements] == [("set", 1), ("location", 3)]
    assert statements[1]["block"] == [{"directive": "return", "line": 4, "args": ["204"]}]
    assert statement_shape(statements) == [
        ("set", ("$a", "1"), None),
        ("location", ("/x",), (("return", ("204",), None),)),
    ]


@pytest.mark.parametrize(
    ("context", "text", "message"),
    [
        (
            "location",
            "add_header X 1;\n}\nserver { listen 81; }",
            "line 2 of the snippet: '}' closes a location block the snippet is placed in",
        ),
        ("server", "return 200; }", "'}' closes a server block"),
        ("http", "server {", 'unexpected end of file, expecting "}"'),
        ("location", "foo_bar 1;", 'unknown directive "foo_bar" in a location block'),
        ("http", "listen 80;", '"listen" directive is not allowed here in the http block'),
        ("location", "add_header X;", 'invalid number of arguments in "add_header"'),
        ("location", "add_header X 1", 'is not terminated by ";"'),
        ("stream", "proxy_set_header A b;", "is not allowed here in the stream block"),
        ("location", "proxy_pass http://x;", "proxy_pass is not allowed in a snippet"),
        ("upstream", "server 10.0.0.1;", "servers come from the registry"),
        ("upstream", "least_conn;", "comes from services.NAME.balance"),
        ("upstream", "keepalive 8;", "services.NAME.keepalive sets it"),
        ("server", "server_name other.test;", "names come from the host's server_names"),
        ("server", "include /etc/nginx/extra.conf;", "include is not allowed in a snippet"),
        ("server", "location / { include x.conf; }", "include is not allowed in a snippet"),
        ("http", "  \n", "at least one directive"),
    ],
)
def test_snippets_that_would_break_out_or_do_not_parse_are_refused(context, text, message):
    with pytest.raises(SnippetError) as info:
        parse_snippet(text, context)
    assert message in str(info.value), str(info.value)


def test_a_location_of_the_authors_own_may_proxy():
    # Inside their own block the author writes what they like; only the route's own
    # location is reserved.
    statements = parse_snippet("location /own/ { proxy_pass http://127.0.0.1:9; }", "server")
    assert statements[0]["block"][0]["directive"] == "proxy_pass"
