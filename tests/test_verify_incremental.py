"""verify_rendered parses only blocks it has not verified, and still catches tampering."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nginxgen import verify as verify_mod
from nginxgen.catalog import Catalog, Instance
from nginxgen.plan import make_plan
from nginxgen.render import render_parts
from nginxgen.spec import Spec
from nginxgen.verify import verify, verify_rendered

N = 300  # above FULL_PARSE_AT, so the first verify is a whole-file parse


def spec() -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "routes": [{"path": f"/s{i}/", "service": f"s{i}"} for i in range(N)],
        }
    )


def catalog(weight_of_s7: int = 1) -> Catalog:
    return Catalog(
        {
            f"s{i}": (
                Instance(f"s{i}-1", f"s{i}", "127.0.0.1", 10000 + i, weight_of_s7 if i == 7 else 1),
            )
            for i in range(N)
        }
    )


@pytest.fixture
def parses(monkeypatch):
    verify_mod._VERIFIED.clear()
    calls: list[str] = []
    real = verify_mod.parse_text

    def counting(text: str, *, strict: bool = False):
        calls.append(text)
        return real(text, strict=strict)

    monkeypatch.setattr(verify_mod, "parse_text", counting)
    return calls


def test_one_change_parses_the_skeleton_and_one_block(parses):
    s = spec()
    plan = make_plan(s, catalog())
    assert verify_rendered(render_parts(plan, s.nginx), plan).ok
    assert len(parses) == 1  # cold: one parse of the whole file
    parses.clear()
    changed = make_plan(s, catalog(weight_of_s7=5))
    rendered = render_parts(changed, s.nginx)
    assert verify_rendered(rendered, changed).ok
    assert len(parses) == 2  # the skeleton and the s7 upstream
    assert "weight=5" in parses[1] and "upstream s7" in parses[1]
    # The incremental verdict agrees with a whole-file verify.
    assert verify(rendered.text, changed).ok


def test_a_tampered_block_or_skeleton_is_caught_even_when_the_rest_is_cached(parses):
    s = spec()
    plan = make_plan(s, catalog())
    good = render_parts(plan, s.nginx)
    assert verify_rendered(good, plan).ok
    upstream, text = good.upstreams[3]
    smuggled = text.replace("    }\n", "        server 6.6.6.6:80;\n    }\n")
    bad = replace(good, upstreams=(*good.upstreams[:3], (upstream, smuggled), *good.upstreams[4:]))
    findings = verify_rendered(bad, plan).findings
    assert any("6.6.6.6" in f.message for f in findings), findings
    # A block that closes early and opens another is not one upstream block.
    escaped = text.replace("    }\n", "    }\n    upstream evil { server 6.6.6.6:80; }\n")
    bad = replace(good, upstreams=(*good.upstreams[:3], (upstream, escaped), *good.upstreams[4:]))
    assert not verify_rendered(bad, plan).ok
    # Something smuggled into the skeleton is caught by the skeleton's round-trip.
    skel = good.skeleton.replace(
        "    server {", "    upstream evil { server 6.6.6.6:80; }\n    server {", 1
    )
    assert not verify_rendered(replace(good, skeleton=skel), plan).ok
