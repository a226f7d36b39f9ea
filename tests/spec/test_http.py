"""The HTTP surface of the spec (issue 20): listeners, hosts, richer routes, streams,
snippets, templates_dir. Every refusal is one sentence naming the key and its line."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from nginxgen.spec import LONG_READ, Spec, SpecError, load_spec
from nginxgen.spec.fields import parse_duration

HEAD = "registry: {kind: file, path: services.yaml}\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(HEAD + textwrap.dedent(body))
    for name in ("a.pem", "a.key", "b.pem", "b.key", "ca.pem", "c.pem", "c.key"):
        (tmp_path / name).touch()
    return path


def load(tmp_path: Path, body: str) -> Spec:
    return load_spec(write(tmp_path, body), accept_unrendered=True)


def refused(tmp_path: Path, body: str) -> str:
    """The message; asserts it starts with the spec file's name."""
    path = write(tmp_path, body)
    with pytest.raises(SpecError) as info:
        load_spec(path, accept_unrendered=True)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


TLS_HOSTS = """\
nginx:
  listen: [8080, {port: 8443, tls: true, http2: true}]
hosts:
  - server_names: [a.test]
    tls: {cert: a.pem, key: a.key}
    routes: [{path: /, service: users}]
"""


# --- listeners ----------------------------------------------------------------------------


def test_listen_takes_ports_addresses_and_mappings_in_a_list(tmp_path):
    spec = load(
        tmp_path,
        """\
        nginx:
          listen: [80, "127.0.0.1:81", "[::1]:82", {host: "::1", port: 443, tls: true},
                   {port: 8080, proxy_protocol: true}]
          real_ip_from: [10.0.0.0/8, 192.0.2.1]
        hosts:
          - server_names: [a.test]
            tls: {cert: a.pem, key: a.key}
            routes: [{path: /, service: users}]
        """,
    )
    assert [lst.address for lst in spec.nginx.listeners] == [
        "80",
        "127.0.0.1:81",
        "[::1]:82",
        "[::1]:443",
        "8080",
    ]
    assert spec.nginx.listeners[3].tls and spec.nginx.listeners[4].proxy_protocol
    assert spec.nginx.real_ip_from == ("10.0.0.0/8", "192.0.2.1/32")
    assert spec.nginx.listen == "80"  # what the one-server render reads


def test_a_single_listen_still_reads_as_before(tmp_path):
    spec = load(tmp_path, "nginx: {listen: 127.0.0.1:8080}\nroutes: [{path: /, service: a}]\n")
    assert spec.nginx.listen == "127.0.0.1:8080"
    assert load(tmp_path, "routes: [{path: /, service: a}]\n").nginx.listen == "8080"


@pytest.mark.parametrize(
    ("listen", "key", "words"),
    [
        ("[8080, 8080]", "nginx.listen", "two listeners on 8080"),
        ("[8080, 99999]", "nginx.listen[1]", "port out of range 1-65535: 99999"),
        ("[{port: 80, host: 'a b'}]", "nginx.listen[0].host", "IP address or a host name"),
        ("[{port: 80, tls: true, redirect_to_https: true}]", "nginx.listen[0]", "plain listener"),
        ("[{port: 80, redirect_to_https: true}]", "nginx.listen", "needs a listener with tls"),
        ("[{port: 80, proxy_protocol: true}]", "nginx", "real_ip_from"),
        ("[8080, 9181]", "nginx", "status_listen must use another port"),
        ("[]", "nginx.listen", "at least one listener"),
        ("[{port: 80, tsl: true}]", "nginx.listen[0].tsl", "unknown key"),
    ],
)
def test_bad_listeners_are_refused(tmp_path, listen, key, words):
    message = refused(tmp_path, f"nginx: {{listen: {listen}}}\nroutes: [{{path: /, service: a}}]\n")
    assert f": {key}: " in message and words in message, message


def test_a_tls_listener_needs_a_host_with_a_certificate(tmp_path):
    message = refused(
        tmp_path,
        """\
        nginx:
          listen:
            - 8080
            - {port: 8443, tls: true}
        routes: [{path: /, service: a}]
        """,
    )
    assert message.startswith("5: nginx.listen[1]: listener 8443 has tls: true but no host")


def test_a_certificate_needs_a_tls_listener(tmp_path):
    message = refused(tmp_path, TLS_HOSTS.replace(", {port: 8443, tls: true, http2: true}", ""))
    assert message.startswith("6: hosts[0].tls: no listener has tls: true"), message


# --- hosts --------------------------------------------------------------------------------


def test_hosts_resolve_with_the_default_host_first(tmp_path):
    more = """\
  - server_names: ["*.a.test", B.Test.]
    routes: [{path: /, service: b}]
routes: [{path: /, service: fallback}]
"""
    spec = load(tmp_path, TLS_HOSTS + more)
    hosts = spec.virtual_hosts
    assert [(h.server_names, h.default, h.key) for h in hosts] == [
        (("_",), True, ()),
        (("a.test",), False, ("hosts", 0)),
        (("*.a.test", "b.test"), False, ("hosts", 1)),
    ]
    assert hosts[1].tls is not None and hosts[1].tls.cert == str(tmp_path / "a.pem")
    assert spec.routes[0].service == "fallback"  # what plan.py reads is unchanged


def test_two_hosts_cannot_claim_one_name(tmp_path):
    message = refused(
        tmp_path,
        """\
        hosts:
          - server_names: [a.test, "*.a.test"]
            routes: [{path: /, service: a}]
          - server_names: [x.test, A.TEST]
            routes: [{path: /, service: b}]
        """,
    )
    assert message == (
        "5: hosts[1].server_names[1]: hosts[0] and hosts[1] both claim the server name a.test"
    )


def test_the_default_host_name_counts_too(tmp_path):
    message = refused(
        tmp_path,
        """\
        nginx: {server_name: a.test}
        routes: [{path: /, service: a}]
        hosts:
          - server_names: [a.test]
            routes: [{path: /, service: b}]
        """,
    )
    assert "hosts[0].server_names[0]: the top-level routes and hosts[0] both claim" in message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("_", "top level"),
        (".a.test", "wildcard over one"),
        ("www.a.*", "wildcard over one"),
        ("a..test", "wildcard over one"),
        ("~^a$", "wildcard over one"),
        ("*", "wildcard over one"),
    ],
)
def test_server_names_are_names_or_leading_wildcards(tmp_path, name, words):
    message = refused(
        tmp_path, f"hosts:\n  - server_names: ['{name}']\n    routes: [{{path: /, service: a}}]\n"
    )
    assert message.startswith("3: hosts[0].server_names[0]: ") and words in message, message


def test_host_policies_fall_to_its_routes_after_their_own_and_before_defaults(tmp_path):
    spec = load(
        tmp_path,
        """\
        defaults:
          failover: {tries: 3, max_tries: 4}
          timeouts: {connect: 2s}
        hosts:
          - server_names: [a.test]
            failover: {tries: 1}
            timeouts: {read: 5s}
            client_max_body_size: 5m
            cors: {origins: [https://app.test]}
            rate_limit: {rate: 10r/s}
            routes:
              - {path: /, service: a}
              - {path: /b/, service: b, failover: {tries: 4}, rate_limit: off, cors: off}
        """,
    )
    first, second = spec.hosts[0].routes
    assert (first.failover.tries, first.failover.max_tries) == (1, 4)
    assert (first.timeouts.connect, first.timeouts.read) == (2.0, 5.0)
    assert first.client_max_body_size == "5m" and first.cors is not None
    assert first.rate_limit is not None and first.rate_limit.rate == "10r/s"
    assert second.failover.tries == 4 and second.rate_limit is None and second.cors is None


def test_a_bad_host_policy_is_reported_once_at_the_host(tmp_path):
    message = refused(
        tmp_path,
        """\
        hosts:
          - server_names: [a.test]
            failover: {tries: 0}
            routes: [{path: /, service: a}, {path: /b/, service: b}]
        """,
    )
    assert message.splitlines() == [
        "4: hosts[0].failover.tries: must be greater than or equal to 1 (got 0)"
    ]


def test_hsts_and_ocsp(tmp_path):
    spec = load(tmp_path, TLS_HOSTS.replace("key: a.key}", "key: a.key, hsts: true}"))
    tls = spec.hosts[0].tls
    assert tls is not None and tls.hsts is not None and tls.hsts.max_age == 63_072_000
    preload = TLS_HOSTS.replace("key: a.key}", "key: a.key, hsts: {preload: true}}")
    assert "preload needs include_subdomains" in refused(tmp_path, preload)
    ocsp = TLS_HOSTS.replace("key: a.key}", "key: a.key, ocsp_stapling: true}")
    assert "6: hosts[0].tls.ocsp_stapling: ocsp_stapling needs nginx.resolver" in refused(
        tmp_path, ocsp
    )
    resolved = ocsp.replace("http2: true}]", "http2: true}]\n  resolver: [1.1.1.1, '[::1]:53']")
    assert load(tmp_path, resolved).nginx.resolver == ("1.1.1.1", "[::1]:53")
    both = TLS_HOSTS.replace("key: a.key}", "key: a.key, hsts: true}").replace(
        "service: users}",
        "service: users, headers: {response: {set: {Strict-Transport-Security: max-age=1}}}}",
    )
    assert "hosts[0].routes[0].headers: Strict-Transport-Security is set by" in refused(
        tmp_path, both
    )


def test_a_missing_certificate_file_names_the_key(tmp_path):
    message = refused(tmp_path, TLS_HOSTS.replace("cert: a.pem", "cert: gone.pem"))
    assert message == f"6: hosts[0].tls.cert: file not found: {tmp_path / 'gone.pem'}"


def test_a_cached_route_in_a_host_needs_redis(tmp_path):
    message = refused(
        tmp_path,
        "hosts:\n  - server_names: [a.test]\n"
        "    routes: [{path: /, service: a, cache: {ttl: 5s}}]\n",
    )
    assert "has a cache but the spec has no top-level `redis:`" in message


# --- routes -------------------------------------------------------------------------------


def route(tmp_path: Path, keys: str, extra: str = "") -> Spec:
    return load(tmp_path, f"routes:\n  - {{path: /a/, service: a, {keys}}}\n{extra}")


def route_refused(tmp_path: Path, keys: str, path: str = "/a/") -> str:
    return refused(tmp_path, f"routes:\n  - {{path: '{path}', service: a, {keys}}}\n")


def test_exact_true_is_match_exact_and_back(tmp_path):
    r = route(tmp_path, "exact: true").routes[0]
    assert (r.match, r.exact) == ("exact", True)
    r = route(tmp_path, "match: exact").routes[0]
    assert (r.match, r.exact) == ("exact", True)
    assert "exact: true contradicts match: prefix" in route_refused(
        tmp_path, "exact: true, match: prefix"
    )


def test_regex_paths_must_work_in_python_and_pcre(tmp_path):
    r = route(tmp_path, "match: regex", extra="").routes[0]
    assert r.match == "regex"
    ok = load(tmp_path, "routes:\n  - {path: '(?i)^/rx/[0-9]{2,}$', service: a, match: regex}\n")
    assert ok.routes[0].path == "(?i)^/rx/[0-9]{2,}$"
    for pattern, words in [
        ("^/rx/(", "not a valid regular expression"),
        ("^/\\u0041", "\\u escapes"),
        ("^/\\N{DIGIT ONE}", "\\N"),
        ("(?a)^/x", "inline flag(s) 'a'"),
        ("^/x(?i)y", "global flags not at the start"),  # PCRE would take it; Python not
    ]:
        message = route_refused(tmp_path, "match: regex", path=pattern)
        assert message.startswith("3: routes[0].path: ") and words in message, message
    # a prefix path is still a path
    assert "URL path characters" in route_refused(tmp_path, "match: prefix", path="^/rx/[0-9]+")


def test_methods_are_known_verbs_and_get_brings_head(tmp_path):
    r = route(tmp_path, "methods: [get, POST, get]").routes[0]
    assert r.methods == ("GET", "POST") and r.allowed_methods == ("GET", "POST", "HEAD")
    assert route(tmp_path, "methods: PUT").routes[0].allowed_methods == ("PUT",)
    assert "unknown HTTP method 'FETCH'" in route_refused(tmp_path, "methods: [GET, FETCH]")
    assert "never proxies TRACE" in route_refused(tmp_path, "methods: [TRACE]")
    assert "at least one method" in route_refused(tmp_path, "methods: []")


def test_rewrite_is_a_regex_and_a_path_with_its_groups(tmp_path):
    r = route(tmp_path, "rewrite: {from: '^/a/v1/(.*)$', to: /v2/$1}").routes[0]
    assert r.rewrite is not None and (r.rewrite.from_, r.rewrite.to) == ("^/a/v1/(.*)$", "/v2/$1")
    for keys, words in [
        ("rewrite: {from: '^/a/(.*)', to: v2/$1}", "starting with '/'"),
        ("rewrite: {from: '^/a/(.*)', to: '/v2/$2'}", "uses $2 but 'from' has 1 group"),
        ("rewrite: {from: '^/a/(.*)', to: '/v2?x=$1'}", "no query string"),
        ("rewrite: {from: '^/a/(.*)', to: '/$host'}", "no other variables"),
        ("rewrite: {from: '^/a/(.*)', to: '/a%20b'}", "not %-escapes"),
        ("rewrite: {from: '^/a/(', to: /}", "not a valid regular expression"),
        ("rewrite: {from: '^/a/(.*)', to: /$1}, strip_prefix: true", "both change the upstream"),
    ]:
        assert words in route_refused(tmp_path, keys), keys
    regex_strip = route_refused(tmp_path, "match: regex, strip_prefix: true", path="^/a/")
    assert "strip_prefix needs match: prefix or exact" in regex_strip


def test_header_changes(tmp_path):
    r = route(
        tmp_path,
        "headers: {request: {set: {X-Tenant: blue, X-Forwarded-Prefix: /a, Host: a.internal}, "
        "remove: [Cookie]}, response: {set: {Cache-Control: no-store, X-Count: 5}, "
        "remove: [X-Powered-By]}}",
    ).routes[0]
    assert r.headers.request.set == {
        "X-Tenant": "blue",
        "X-Forwarded-Prefix": "/a",
        "Host": "a.internal",
    }
    assert r.headers.response.set["X-Count"] == "5" and r.headers.response.remove == (
        "X-Powered-By",
    )
    for keys, words in [
        ("headers: {request: {set: {X-Forwarded-For: x}}}", "set by the gateway"),
        ("headers: {request: {remove: [Connection]}}", "belongs to the connection"),
        ("headers: {response: {remove: [X-Request-ID]}}", "set by the gateway"),
        ("headers: {request: {remove: [Host]}}", "cannot be removed"),
        ("headers: {request: {set: {X-A: '$remote_addr'}}}", "needs a snippet"),
        ("headers: {request: {set: {X-A: ''}}}", "remove: instead"),
        ("headers: {request: {set: {X-A: b}, remove: [x-a]}}", "named twice"),
        ("headers: {request: {set: {'X A': b}}}", "not an HTTP header name"),
        ("headers: {response: {remove: [Server]}}", "written by nginx itself"),
        ("headers: {response: {set: {Date: x}}}", "written by nginx itself"),
    ]:
        message = route_refused(tmp_path, keys)
        assert message.startswith("3: routes[0].headers") and words in message, (keys, message)
    # A header the route's auth or cache writes itself would be sent twice.
    for keys, words in [
        (
            "headers: {request: {set: {X-User: x}}}, "
            "auth: {url: 'http://127.0.0.1:1/v', forward_headers: [X-User]}",
            "headers.request.set.X-User is written by auth.forward_headers",
        ),
        (
            "headers: {request: {set: {Accept-Encoding: gzip}}}, cache: {ttl: 5s}",
            "headers.request.set.Accept-Encoding is written by cache",
        ),
    ]:
        message = refused(
            tmp_path,
            f"routes:\n  - {{path: /a/, service: a, {keys}}}\nredis: {{host: 127.0.0.1}}\n",
        )
        assert message.startswith("3: routes[0]: ") and words in message, (keys, message)


def test_cors(tmp_path):
    r = route(
        tmp_path,
        "methods: [GET, PUT], cors: {origins: [HTTPS://App.Test, 'http://[::1]:8080'], "
        "credentials: true, max_age: 1h}",
    ).routes[0]
    assert r.cors is not None and r.cors.origins == ("https://app.test", "http://[::1]:8080")
    assert r.cors.max_age == 3600 and r.cors.headers == ("Authorization", "Content-Type")
    for keys, words in [
        ("cors: {origins: ['*'], credentials: true}", "cannot go with origins '*'"),
        ("cors: {origins: ['https://a.test/']}", "no path or trailing slash"),
        ("cors: {origins: []}", "must list at least one origin"),
        ("cors: {origins: ['*', 'https://a.test']}", "not both"),
        ("cors: {origins: ['https://a.test'], max_age: 2d}", "up to 24h"),
        ("methods: [GET], cors: {origins: ['https://a.test'], methods: [GET, DELETE]}", "DELETE"),
        (
            "cors: {origins: ['https://a.test']}, headers: {response: {set: "
            "{Access-Control-Allow-Origin: x}}}",
            "set by cors",
        ),
    ]:
        assert words in route_refused(tmp_path, keys), keys


def test_long_lived_routes_read_for_an_hour_unless_told(tmp_path):
    spec = load(
        tmp_path,
        """\
        defaults: {timeouts: {read: 30s}}
        routes:
          - {path: /ws/, service: chat, websocket: true}
          - {path: /sse/, service: feed, streaming: true, timeouts: {read: 5m}}
          - {path: /, service: web}
        hosts:
          - server_names: [a.test]
            timeouts: {read: 2m}
            routes: [{path: /ws/, service: chat, websocket: true}]
        """,
    )
    ws, sse, web = spec.routes
    assert ws.timeouts.read == parse_duration(LONG_READ) == 3600
    assert sse.timeouts.read == 300 and web.timeouts.read == 30
    assert spec.hosts[0].routes[0].timeouts.read == 120  # the host said so


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ("websocket: true, protocol: grpc", "websocket: true cannot go with protocol: grpc"),
        ("streaming: true, protocol: grpc", "streaming: true cannot go with protocol: grpc"),
        ("methods: [POST], protocol: grpc", "methods cannot go with protocol: grpc"),
        ("strip_prefix: true, protocol: grpc", "strip_prefix cannot go with protocol: grpc"),
        ("websocket: true, methods: [POST]", "needs GET in methods"),
        ("streaming: true, cache: {ttl: 5s}", "streaming: true cannot go with cache"),
        ("protocol: h3", "'http' or 'grpc'"),
    ],
)
def test_route_keys_that_cannot_go_together(tmp_path, keys, words):
    message = route_refused(tmp_path, keys)
    assert message.startswith("3: routes[0]") and words in message, message


def test_grpc_needs_a_listener_with_http2(tmp_path):
    body = "nginx: {listen: [8080]}\nroutes: [{path: /pkg.Svc/, service: g, protocol: grpc}]\n"
    assert "3: routes[0].protocol: protocol: grpc needs HTTP/2" in refused(tmp_path, body)
    h2c = body.replace("[8080]", "[8080, {port: 8081, http2: true}]")
    assert load(tmp_path, h2c).routes[0].protocol == "grpc"
    # A TLS-only http2 listener does not serve a host without a certificate.
    tls_only = TLS_HOSTS + "routes: [{path: /pkg.Svc/, service: g, protocol: grpc}]\n"
    assert "routes[0].protocol: protocol: grpc needs HTTP/2" in refused(tmp_path, tls_only)


def test_a_grpc_route_to_a_split_service_is_refused_naming_the_route(tmp_path):
    # A split service has only its versions' upstreams: grpc_pass would name none of
    # them, and `nginx -t` would say "no port in upstream" without naming the route.
    body = (
        "nginx: {listen: [8080, {port: 8081, http2: true}]}\n"
        "services: {carts: {split: {weights: {blue: 50, green: 50}}}}\n"
        "routes: [{path: /carts.Cart/, service: carts, protocol: grpc}]\n"
    )
    message = refused(tmp_path, body)
    assert message.startswith("4: routes[0].protocol: protocol: grpc cannot go to "), message
    assert "service 'carts', which has a split (services.carts.split)" in message
    # The split is ignored with the status listener off (a note): the route is fine then.
    off = body.replace("nginx: {", "nginx: {status_listen: off, ")
    assert load(tmp_path, off).routes[0].protocol == "grpc"


def test_upstream_tls(tmp_path):
    r = route(tmp_path, "upstream_tls: {ca: ca.pem, sni: Orders.Internal}").routes[0]
    assert r.upstream_tls is not None and r.upstream_tls.sni == "orders.internal"
    assert r.upstream_tls.ca == str(tmp_path / "ca.pem")
    assert route(tmp_path, "upstream_tls: {verify: false}").routes[0].upstream_tls is not None
    for keys, words in [
        ("upstream_tls: {sni: a.internal}", "verify needs ca"),
        ("upstream_tls: {ca: ca.pem}", "verify needs sni"),
        ("upstream_tls: {verify: false, client_cert: c.pem}", "go together"),
        ("upstream_tls: {ca: none.pem, sni: a.internal}", "file not found"),
    ]:
        assert words in route_refused(tmp_path, keys), keys
    disagree = refused(
        tmp_path,
        "routes:\n  - {path: /a/, service: a, upstream_tls: {verify: false}}\n"
        "  - {path: /b/, service: a}\n",
    )
    assert disagree.startswith("4: routes[1]: routes to service 'a' must agree on protocol")


# --- streams ------------------------------------------------------------------------------


def test_streams_alone_are_a_spec(tmp_path):
    spec = load(
        tmp_path,
        """\
        streams:
          - {listen: "127.0.0.1:5432", service: db}
          - {listen: 5353, service: dns, protocol: udp, responses: 1, failover: off,
             timeouts: {idle: 5s}}
          - {listen: 5432, service: db2, protocol: udp}
        """,
    )
    db, dns, _ = spec.streams
    assert (db.host, db.port, db.protocol, db.failover.tries) == ("127.0.0.1", 5432, "tcp", 2)
    assert (dns.responses, dns.failover.enabled, dns.timeouts.idle) == (1, False, 5.0)
    assert spec.routes == () and spec.virtual_hosts == ()


@pytest.mark.parametrize(
    ("streams", "key", "words"),
    [
        ("[{listen: 8080, service: db}]", "streams[0].listen", "taken by nginx.listen[0]"),
        ("[{listen: 9181, service: db}]", "streams[0].listen", "taken by nginx.status_listen"),
        (
            "[{listen: '127.0.0.1:7000', service: a}, {listen: 7000, service: b}]",
            "streams[1].listen",
            "taken by streams[0]",
        ),
        ("[{listen: 7000, service: db, responses: 1}]", "streams[0]", "needs protocol: udp"),
        ("[{listen: nowhere, service: db}]", "streams[0].listen", "port or host:port"),
        ("[{listen: 7000, service: 'a b'}]", "streams[0].service", "not a valid service"),
    ],
)
def test_bad_streams(tmp_path, streams, key, words):
    message = refused(
        tmp_path,
        f"nginx: {{listen: 8080}}\nroutes: [{{path: /, service: w}}]\nstreams: {streams}\n",
    )
    assert f": {key}: " in message and words in message, message


def test_stream_balance_must_exist_in_stream(tmp_path):
    body = "streams: [{listen: 7000, service: db}]\nservices: {db: {balance: %s}}\n"
    assert "no ip_hash" in refused(tmp_path, body % "ip_hash")
    assert "can only hash on" in refused(tmp_path, body % "'hash $request_uri'")
    assert load(tmp_path, body % "'hash $remote_addr consistent'").streams


def test_a_spec_must_serve_something(tmp_path):
    assert "nothing to serve: give routes" in refused(tmp_path, "nginx: {listen: 8080}\n")


# --- snippets, templates_dir --------------------------------------------------------------


def test_snippets_at_every_level_are_parsed_in_their_context(tmp_path):
    spec = load(
        tmp_path,
        """\
        snippets:
          http: "map $request_method $x { default a; }"
          server: |
            add_header X-Frame-Options DENY always;
        services:
          a: {snippets: "keepalive_timeout 30s;"}
        routes:
          - {path: /, service: a, snippets: 'add_header X-Y "$x" always;'}
        streams:
          - {listen: 7000, service: db, snippets: "proxy_timeout 5s;"}
        """,
    )
    assert spec.snippets.http is not None and spec.snippets.http.parsed[0]["directive"] == "map"
    assert spec.services["a"].snippets is not None
    assert spec.routes[0].snippets is not None
    assert spec.routes[0].snippets.parsed[0]["args"] == ["X-Y", "$x", "always"]
    assert spec.streams[0].snippets is not None


def test_a_snippet_that_does_not_parse_names_its_key_and_line(tmp_path):
    message = refused(
        tmp_path,
        """\
        routes:
          - path: /
            service: a
            snippets: |
              add_header X-A 1;
              add_header X-B;
        """,
    )
    assert message == (
        "5: routes[0].snippets: line 2 of the snippet: invalid number of arguments in "
        '"add_header" directive in a location block'
    )


@pytest.mark.parametrize(
    ("where", "text", "words"),
    [
        ("snippets: {http: 'listen 80;'}", "", '"listen" directive is not allowed here'),
        ("snippets: {server: 'x_y 1;'}", "", 'unknown directive "x_y"'),
        ("snippets: {server: 'return 200; } server { listen 81;'}", "", "'}' closes a server"),
        ("snippets: {server: 'listen 81;'}", "", "listeners come from nginx.listen"),
        ("snippets: {stream: 'proxy_pass x;'}", "", "is not allowed here"),
        ("snippets: {location: 'a b;'}", "", "snippets.location: unknown key"),
        ("snippets: {http: [a]}", "", "write it as a string"),
    ],
)
def test_bad_top_level_snippets(tmp_path, where, text, words):
    message = refused(tmp_path, f"routes: [{{path: /, service: a}}]\n{where}\n")
    assert words in message, message


def test_templates_dir_holds_partials_by_their_names(tmp_path):
    partials = tmp_path / "partials"
    partials.mkdir()
    (partials / "location.conf.j2").write_text("")
    (partials / "README.txt").write_text("notes are fine")
    spec = load(tmp_path, "templates_dir: partials\nroutes: [{path: /, service: a}]\n")
    assert spec.templates_dir == str(partials)
    (partials / "locaton.conf.j2").write_text("")
    message = refused(tmp_path, "templates_dir: partials\nroutes: [{path: /, service: a}]\n")
    assert message.startswith("2: templates_dir: locaton.conf.j2 would replace no template")
    assert "not a directory" in refused(
        tmp_path, "templates_dir: nope\nroutes: [{path: /, service: a}]\n"
    )


# --- every key renders: nothing is refused as "not rendered yet" ---------------------------


def test_every_route_key_renders_so_none_is_refused(tmp_path):
    path = write(
        tmp_path,
        """\
        nginx: {listen: [8080, 8081]}
        routes:
          - {path: /, service: a, rewrite: {from: '^/a/(.*)$', to: /b/$1},
             headers: {request: {remove: [Cookie]}}, upstream_tls: {verify: false}}
          - {path: /ws/, service: chat, websocket: true, methods: [GET]}
        hosts:
          - server_names: [a.test]
            routes: [{path: /, service: a, cors: {origins: ["https://x.test"]},
                      upstream_tls: {verify: false}}]
        streams: [{listen: 7000, service: db}]
        """,
    )
    spec = load_spec(path)
    assert spec.routes[1].methods == ("GET",) and spec.hosts[0].routes[0].cors is not None


def test_a_route_snippet_with_rewrite_directives_cannot_go_with_rewrite(tmp_path):
    message = route_refused(
        tmp_path, "rewrite: {from: '^/a/(.*)$', to: /b/$1}, snippets: 'set $x 1; return 200;'"
    )
    assert "snippets with return, set cannot go with rewrite" in message, message
    ok = route(tmp_path, "rewrite: {from: '^/a/(.*)$', to: /b/$1}, snippets: 'gzip off;'")
    assert ok.routes[0].rewrite is not None


def test_cors_origin_patterns_are_one_label_of_a_domain(tmp_path):
    from nginxgen.spec.http import origin_regex

    r = route(tmp_path, "cors: {origins: ['https://*.Example.com:8443', 'https://a.test']}")
    pattern = r.routes[0].cors.origins[0]
    assert pattern == "https://*.example.com:8443"
    rx = re.compile(origin_regex(pattern))
    assert rx.match("https://app.example.com:8443")
    for other in (
        "https://example.com:8443",
        "https://a.b.example.com:8443",
        "https://app.example.com",
        "http://app.example.com:8443",
        "https://app.example.com:8443.evil.test",
        "https://evil.test/.example.com:8443",
    ):
        assert not rx.match(other), other
    assert origin_regex("https://a.test") is None
    assert "two labels" in route_refused(tmp_path, "cors: {origins: ['https://*.com']}")
    assert "scheme://host" in route_refused(tmp_path, "cors: {origins: ['https://a.*.test']}")


def test_specs_without_new_keys_load_as_before(tmp_path):
    path = write(tmp_path, "nginx: {listen: 8080}\nroutes: [{path: /, service: a, exact: true}]\n")
    spec = load_spec(path)
    assert spec.nginx.listen == "8080" and spec.routes[0].exact


def test_service_names_cover_every_host_and_stream_in_order(tmp_path):
    spec = load(
        tmp_path,
        """\
        routes: [{path: /, service: web}, {path: /b/, service: api}]
        hosts:
          - server_names: [a.test]
            routes: [{path: /, service: api}, {path: /c/, service: chat}]
        streams: [{listen: 7000, service: db}, {listen: 7001, service: web}]
        """,
    )
    assert spec.http_service_names == ["web", "api", "chat"]
    assert spec.stream_service_names == ["db", "web"]
    assert spec.service_names == ["web", "api", "chat", "db"]  # what the sources watch
