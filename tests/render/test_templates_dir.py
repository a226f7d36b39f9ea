"""templates_dir: the spec author's partials replace nginxgen's by name, through the render
cache's loader; what they render is verified like nginxgen's own."""

from __future__ import annotations

from pathlib import Path

from nginxgen.model.validate import CatalogBuilder
from nginxgen.pipeline import BuildCache, build
from nginxgen.spec import Spec, parse_spec

# Wraps nginxgen's own partial ("nginxgen/NAME" always names the bundled one).
WRAPPED_UPSTREAM = '    # team partial\n{% include "nginxgen/upstream.conf.j2" %}'
# A location that answers by itself: the round trip must refuse it.
NO_PROXY_LOCATION = "        location {{ loc.path | q }} {\n            return 200;\n        }\n"


def spec(tmp_path: Path, templates: dict[str, str] | None) -> Spec:
    text = (
        "registry: {kind: file, path: services.yaml}\n"
        f"nginx: {{listen: 8080, flavor: nginx, output: {tmp_path}/nginx.conf}}\n"
        "routes: [{path: /, service: users}]\n"
    )
    if templates is not None:
        partials = tmp_path / "partials"
        partials.mkdir(exist_ok=True)
        for name, body in templates.items():
            (partials / name).write_text(body)
        text += "templates_dir: partials\n"
    return parse_spec(text, tmp_path / "nginxgen.yaml")


def catalog():
    b = CatalogBuilder("test")
    b.add("users", id="u1", address="10.0.0.1:80")
    return b.build()


def test_an_override_wins_by_name_and_may_wrap_the_bundled_partial(tmp_path):
    result = build(
        spec(tmp_path, {"upstream.conf.j2": WRAPPED_UPSTREAM}),
        catalog(),
        binary=None,
        cache=BuildCache(),
    )
    assert result.verdict.ok, result.verdict.findings
    assert "    # team partial\n    upstream users {" in result.text


def test_an_override_of_an_included_partial_is_used_where_it_is_included(tmp_path):
    """gateway_location.conf.j2 is included by nginxgen's own location.conf.j2."""
    override = (
        '{% include "nginxgen/gateway_location.conf.j2" %}\n'
        '            add_header X-Team "platform" always;\n'
    )
    result = build(
        spec(tmp_path, {"gateway_location.conf.j2": override}),
        catalog(),
        binary=None,
        cache=BuildCache(),
    )
    assert result.verdict.ok, result.verdict.findings
    assert 'add_header X-Team "platform" always;' in result.text


def test_an_override_that_drops_the_proxy_is_refused_by_verify(tmp_path):
    result = build(
        spec(tmp_path, {"location.conf.j2": NO_PROXY_LOCATION}),
        catalog(),
        binary=None,
        cache=BuildCache(),
    )
    assert not result.verdict.ok
    assert "route '/' proxies to []" in str(result.verdict.findings[0])


def test_one_build_cache_follows_the_spec_it_is_given(tmp_path):
    """A reloaded spec that adds, changes or drops templates_dir renders with it at once:
    the cached blocks of the old templates are not reused."""
    cache = BuildCache()
    plain = build(spec(tmp_path, None), catalog(), binary=None, cache=cache).text
    assert "# team partial" not in plain
    wrapped = spec(tmp_path, {"upstream.conf.j2": WRAPPED_UPSTREAM})
    assert "# team partial" in build(wrapped, catalog(), binary=None, cache=cache).text
    again = build(spec(tmp_path, None), catalog(), binary=None, cache=cache).text
    assert again == plain
