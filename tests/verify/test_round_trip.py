"""verify refuses any text that is not exactly what the plan says."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import BuildCache, build
from nginxgen.render import RenderError, lua_string, nginx_time, nginx_token
from nginxgen.spec import parse_spec
from nginxgen.verify import verify

SPEC = """\
registry: {kind: file, path: s.yaml}
nginx: {listen: 8080, endpoints: reload}  # the static form; tests/plan/test_endpoints.py: dynamic
routes:
  - {path: /a/, service: a}
  - {path: /b/, service: b}
"""


@pytest.fixture
def built(tmp_path: Path):
    spec = parse_spec(SPEC, tmp_path / "nginxgen.yaml")
    b = CatalogBuilder("t")
    b.add("a", id="a1", address="127.0.0.1:9001", weight=3)
    b.add("a", id="a2", address="127.0.0.1:9002", state="draining")
    b.add("b", id="b1", address="127.0.0.1:9003", state="down")
    return build(spec, b.build(), binary=None, cache=BuildCache())


def test_plan_keeps_draining_and_down_out_and_sends_empty_services_to_503(built) -> None:
    assert built.verdict.ok
    (up,) = built.plan.upstreams
    assert [s.address for s in up.servers] == ["127.0.0.1:9001"]
    assert {loc.path: loc.upstream for loc in built.plan.locations} == {"/a/": "a", "/b/": None}
    assert "return 503" in built.text
    assert "upstream b" not in built.text


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("server 127.0.0.1:9001 weight=3", "server 127.0.0.1:9009 weight=3", "has servers"),
        (
            "keepalive 32;",
            "keepalive 32;\n        server 10.6.6.6:80;",
            "has servers",
        ),
        ("keepalive 32;", "keepalive 32; hash $request_uri;", "unplanned directive"),
        ("proxy_pass http://a;", "proxy_pass http://evil;", "proxies to"),
        (
            "upstream a {",
            "upstream b { server 1.2.3.4:5; }\n    upstream a {",
            "unplanned upstream",
        ),
        ("location /a/ {", "location /x/ {", "route '/a/' is missing"),
        ("proxy_pass http://a;", "proxy_pass http://a", "syntax"),
    ],
)
def test_tampered_text_is_refused(built, old: str, new: str, complaint: str) -> None:
    assert old in built.text
    verdict = verify(built.text.replace(old, new, 1), built.plan)
    assert not verdict.ok
    assert any(complaint in str(f) for f in verdict.findings), verdict.findings


def test_nginx_token_quotes_or_refuses() -> None:
    assert nginx_token("127.0.0.1:80") == "127.0.0.1:80"
    assert nginx_token('{"a":1}') == "'{\"a\":1}'"
    assert nginx_token("it's") == '"it\'s"'
    for bad in ("$host", "a\nb", "x\x00"):
        with pytest.raises(RenderError):
            nginx_token(bad)


def test_lua_string_escapes_everything_unsafe() -> None:
    assert lua_string('a"b\\c') == '"a\\"b\\\\c"'
    assert lua_string("}]]\n") == '"\\125\\093\\093\\010"'.replace("\\093", "]")


def test_nginx_time() -> None:
    assert [nginx_time(x) for x in (5, 0.25, 0, 90)] == ["5s", "250ms", "0s", "90s"]


def test_registry_changes_that_serve_nothing_new_render_the_same_text(tmp_path: Path) -> None:
    """Meta, tags, and draining/down instances coming and going must not cause a reload."""
    spec = parse_spec(SPEC, tmp_path / "nginxgen.yaml")

    def text(meta: str, extra_state: str | None) -> str:
        b = CatalogBuilder("t")
        b.add("a", id="a1", address="127.0.0.1:9001", meta={"build": meta}, tags=[meta])
        if extra_state:
            b.add("a", id="a2", address="127.0.0.1:9002", state=extra_state)
        b.add("b", id="b1", address="127.0.0.1:9003")
        return build(spec, b.build(), binary=None, cache=BuildCache()).text

    first = text("1", None)
    assert text("2", None) == first
    assert text("1", "draining") == first
    assert text("3", "down") == first
    assert text("1", "up") != first
