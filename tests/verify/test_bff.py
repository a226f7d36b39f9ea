"""The BFF layer's plan and its round trip: part locations are internal and proxy where
planned with capped timeouts, the aggregate answers from its Lua call, image_fit resizes
with the width Lua chose; a config that differs is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import BuildCache, build
from nginxgen.spec import parse_spec
from nginxgen.verify import verify

SPEC = """\
registry: {kind: file, path: s.yaml}
nginx: {listen: 8080}
defaults: {timeouts: {connect: 1s, read: 30s}, failover: {tries: 3}}
routes:
  - path: /bff/home
    aggregate:
      timeout: 2s
      parts:
        user: {service: users, path: /me, required: true}
        cart: {service: carts, path: "/carts/{cookie.session}", timeout: 500ms}
  - path: /img/
    service: img
    image_fit: {widths: [320, 640], from: query w}
"""


@pytest.fixture
def built(tmp_path: Path):
    spec = parse_spec(SPEC, tmp_path / "nginxgen.yaml")
    b = CatalogBuilder("t")
    b.add("users", id="u1", address="127.0.0.1:9001")
    b.add("img", id="i1", address="127.0.0.1:9003")
    return build(spec, b.build(), binary=None, cache=BuildCache())


def test_the_plan(built) -> None:
    assert built.verdict.ok, built.verdict.findings
    locs = {loc.path: loc for loc in built.plan.locations}
    assert set(locs) == {
        "/bff/home",
        "/_nginxgen/part/0/user",
        "/_nginxgen/part/0/cart",
        "/img/",
        "/_nginxgen/image/1",
    }
    cart, user = locs["/_nginxgen/part/0/cart"], locs["/_nginxgen/part/0/user"]
    # carts has nobody: the part answers 503 (dynamic mode: Lua's check), the merge null
    assert cart.upstream is None or cart.checks_endpoints
    assert user.upstream == "users"
    # Capped by the part's budget: connect, each read, retries.
    assert (cart.timeouts.connect, cart.timeouts.read, cart.failover.timeout) == (0.5, 0.5, 0.5)
    assert (user.timeouts.connect, user.timeouts.read, user.failover.timeout) == (1.0, 2.0, 2.0)
    assert user.failover.tries == 3
    assert "Accept-Encoding" in user.cleared_headers and "Range" in user.cleared_headers
    assert built.plan.bff is not None
    assert "ngx_http_image_filter_module.so" in built.text
    assert "proxy_cache_path" in built.text


def test_no_bff_route_renders_no_image_filter(tmp_path: Path) -> None:
    spec = parse_spec(
        "registry: {kind: file, path: s.yaml}\nroutes: [{path: /, service: a}]\n",
        tmp_path / "nginxgen.yaml",
    )
    b = CatalogBuilder("t")
    b.add("a", id="a1", address="127.0.0.1:9001")
    out = build(spec, b.build(), binary=None, cache=BuildCache())
    assert "image_filter" not in out.text and "proxy_cache_path" not in out.text
    assert out.plan.bff is None


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("            internal;\n", "", "is not internal"),
        (
            "proxy_pass http://users$nginxgen_part_uri;",
            "proxy_pass http://users;",
            "proxies to",
        ),
        (
            'require("nginxgen.aggregate").serve("0")',
            'require("nginxgen.aggregate").serve("1")',
            "runs Lua",
        ),
        (
            "image_filter resize $nginxgen_image_width_1 -;",
            "image_filter resize 4000 -;",
            "resizes with",
        ),
        ("location = /_nginxgen/part/0/user {", "location /_nginxgen/part/0/user {", "missing"),
    ],
)
def test_tampered_text_is_refused(built, old: str, new: str, complaint: str) -> None:
    assert old in built.text
    verdict = verify(built.text.replace(old, new, 1), built.plan)
    assert not verdict.ok
    assert any(complaint in str(f) for f in verdict.findings), verdict.findings


def test_nginxgen_lint_passes_the_rendered_config(built, tmp_path: Path) -> None:
    """The parts and image_fit's original proxy to upstreams like routes: lint counts
    them as users of those upstreams (`proxy_pass http://users$nginxgen_part_uri`)."""
    from tests.helpers import run_cli

    conf = tmp_path / "nginx.conf"
    conf.write_text(built.text)
    result = run_cli("lint", str(conf))
    assert result.returncode == 0, result.stdout + result.stderr
