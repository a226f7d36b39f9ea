"""The BFF keys of a route: `aggregate:` (parts, templates, filters, timeouts) and
`image_fit:`. Every refusal is one sentence naming the key and its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nginxgen.spec import SpecError, load_spec
from nginxgen.spec.aggregate import parse_template

HEAD = "registry: {kind: file, path: services.yaml}\n"
HOME = """\
routes:
  - path: /bff/home
    aggregate:
      timeout: 2s
      parts:
        user:   {service: users, path: /me, required: true}
        cart:   {service: carts, path: "/carts/{cookie.session}", timeout: 500ms}
        recs:   {service: recs, path: /top, allow: [id, title, image]}
"""


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(HEAD + textwrap.dedent(body))
    return path


def refused(tmp_path: Path, body: str) -> str:
    path = write(tmp_path, body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert "\n" not in message, message
    return message.removeprefix(f"{path}:")


def test_the_issue_example_loads(tmp_path):
    spec = load_spec(write(tmp_path, HOME))
    (route,) = spec.routes
    assert route.service is None and route.aggregate is not None
    assert route.services == ("users", "carts", "recs")
    assert spec.service_names == ["users", "carts", "recs"]
    parts = route.aggregate.parts
    assert list(parts) == ["user", "cart", "recs"]
    assert route.aggregate.budget(parts["cart"]) == 0.5
    assert route.aggregate.budget(parts["user"]) == 2.0


def test_a_part_timeout_never_outlasts_the_whole(tmp_path):
    spec = load_spec(
        write(
            tmp_path,
            """\
            routes:
              - path: /b
                aggregate: {timeout: 1s, parts: {a: {service: a, path: /a, timeout: 5s}}}
            """,
        )
    )
    agg = spec.routes[0].aggregate
    assert agg.budget(agg.parts["a"]) == 1.0


def test_templates_become_pieces():
    assert parse_template("/carts/{cookie.session}?v=2") == (
        "/carts/",
        ("cookie", "session"),
        "?v=2",
    )
    assert parse_template("/u/{header.X-User}/{query.id}/{path.2}/x") == (
        "/u/",
        ("header", "X-User"),
        "/",
        ("query", "id"),
        "/",
        ("path", "2"),
        "/x",
    )


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("carts/{cookie.s}", "must start with '/'"),
        ("/carts/x{cookie.s}", "whole path segment"),
        ("/carts/{cookie.s}x", "whole path segment"),
        ("/carts/{env.HOME}", "unknown source 'env'"),
        ("/carts/{cookie.a b}", "not a cookie name"),
        ("/carts/{header.X_Y}", "not a header name"),
        ("/carts/{path.0}", "N from 1 to 32"),
        ("/carts/{path.x}", "N from 1 to 32"),
        ("/carts/%2F", "other text may hold only URL path characters"),
        ("/a/../b", "'.' and '..' segments"),
        ("/a?x={query.q}", "no placeholders"),
        ("/a/{cookie.s", "other text may hold only"),
    ],
)
def test_bad_templates_are_refused(tmp_path, template, why):
    body = f"""\
        routes:
          - path: /b
            aggregate: {{parts: {{a: {{service: a, path: "{template}"}}}}}}
        """
    message = refused(tmp_path, body)
    assert message.startswith("4: routes[0].aggregate.parts.a.path: "), message
    assert why in message


@pytest.mark.parametrize(
    ("route", "key", "why"),
    [
        (
            "{path: /b, service: a, aggregate: {parts: {a: {service: a, path: /a}}}}",
            "",
            "service and aggregate",
        ),
        ("{path: /b}", "", "needs a service"),
        (
            "{path: /b, websocket: true, aggregate: {parts: {a: {service: a, path: /a}}}}",
            "",
            "websocket",
        ),
        (
            "{path: /b, strip_prefix: true, aggregate: {parts: {a: {service: a, path: /a}}}}",
            "",
            "strip_prefix",
        ),
        ("{path: /b, aggregate: {parts: {}}}", "aggregate.parts", "must list at least one part"),
        (
            "{path: /b, aggregate: {parts: {1x: {service: a, path: /a}}}}",
            "aggregate.parts.1x",
            "part name",
        ),
        (
            "{path: /b, aggregate: {parts: {a: {service: a, path: /a, allow: [x], deny: [y]}}}}",
            "aggregate.parts.a",
            "allow or deny",
        ),
        (
            "{path: /b, aggregate: {timeout: 0s, parts: {a: {service: a, path: /a}}}}",
            "aggregate.timeout",
            "between 1ms",
        ),
        (
            "{path: /_nginxgen/x, aggregate: {parts: {a: {service: a, path: /a}}}}",
            "",
            "/_nginxgen/",
        ),
        (
            "{path: /i, service: a, image_fit: {widths: []}}",
            "image_fit.widths",
            "must list at least one width",
        ),
        ("{path: /i, service: a, image_fit: {widths: [10]}}", "image_fit.widths", "16 to 8192"),
        (
            "{path: /i, service: a, image_fit: {widths: [320], from: 'cookie w'}}",
            "image_fit.from",
            "query NAME",
        ),
        ("{path: /i, service: a, websocket: true, image_fit: {widths: [320]}}", "", "websocket"),
        (
            "{path: /b, cors: {origins: [https://a.test]},"
            " aggregate: {parts: {a: {service: a, path: /a}}}}",
            "",
            "cors cannot go with aggregate",
        ),
        (
            "{path: /b, methods: [GET, POST], aggregate: {parts: {a: {service: a, path: /a}}}}",
            "",
            "GET and HEAD only",
        ),
        (
            "{path: /i, service: a, rewrite: {from: '^/i/(.*)$', to: /x/$1},"
            " image_fit: {widths: [320]}}",
            "",
            "rewrite cannot go with image_fit",
        ),
    ],
)
def test_keys_that_cannot_go_together_are_refused(tmp_path, route, key, why):
    message = refused(tmp_path, f"routes:\n  - {route}\n")
    assert f": routes[0]{'.' + key if key else ''}: " in message, message
    assert why in message, message


def test_image_fit_sources_in_order(tmp_path):
    spec = load_spec(
        write(
            tmp_path,
            """\
            routes:
              - path: /img/
                service: img
                image_fit: {widths: [1280, 320, 640], from: [query w, client-hint]}
            """,
        )
    )
    fit = spec.routes[0].image_fit
    assert fit.widths == (320, 640, 1280)
    assert fit.sources()[:3] == (("arg", "w"), ("header", "Sec-CH-Width"), ("header", "Width"))
