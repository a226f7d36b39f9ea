"""verify_rendered parses only blocks it has not verified, and still catches tampering."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.plan import make_plan
from nginxgen.render import render_parts
from nginxgen.spec import Spec
from nginxgen.util import forked
from nginxgen.verify import VerifyCache, verify, verify_rendered
from nginxgen.verify import incremental as verify_mod

N = 300  # above FULL_PARSE_AT, so the first verify is a whole-file parse


def spec() -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {"endpoints": "reload"},  # one weight changes one block's text
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
    calls: list[str] = []
    real = verify_mod.parse_text

    def counting(text: str, *, strict: bool = False):
        calls.append(text)
        return real(text, strict=strict)

    monkeypatch.setattr(verify_mod, "parse_text", counting)
    return calls


def test_one_change_parses_the_skeleton_and_one_block(parses, monkeypatch):
    monkeypatch.setattr(forked, "MAX_WORKERS", 1)  # count every parse in this process
    s, verified = spec(), VerifyCache()
    plan = make_plan(s, catalog())
    cold = render_parts(plan, s.nginx)
    assert verify_rendered(cold, plan, cache=verified).ok
    # cold: the skeleton, then all upstreams in one run and all locations in another
    assert len(parses) == 3
    assert all(text in parses[1] for _, text in cold.upstreams)
    assert all(text in parses[2] for _, text in cold.locations)
    parses.clear()
    changed = make_plan(s, catalog(weight_of_s7=5))
    rendered = render_parts(changed, s.nginx)
    assert verify_rendered(rendered, changed, cache=verified).ok
    assert len(parses) == 2  # the skeleton and the s7 upstream
    assert "weight=5" in parses[1] and "upstream s7" in parses[1]
    # The incremental verdict agrees with a whole-file verify.
    assert verify(rendered.text, changed).ok


def test_a_tampered_block_or_skeleton_is_caught_even_when_the_rest_is_cached(parses):
    s, verified = spec(), VerifyCache()
    plan = make_plan(s, catalog())
    good = render_parts(plan, s.nginx)
    assert verify_rendered(good, plan, cache=verified).ok
    upstream, text = good.upstreams[3]
    smuggled = text.replace("    }\n", "        server 6.6.6.6:80;\n    }\n")
    bad = replace(good, upstreams=(*good.upstreams[:3], (upstream, smuggled), *good.upstreams[4:]))
    findings = verify_rendered(bad, plan, cache=verified).findings
    assert any("6.6.6.6" in f.message for f in findings), findings
    # A block that closes early and opens another is not one upstream block.
    escaped = text.replace("    }\n", "    }\n    upstream evil { server 6.6.6.6:80; }\n")
    bad = replace(good, upstreams=(*good.upstreams[:3], (upstream, escaped), *good.upstreams[4:]))
    assert not verify_rendered(bad, plan, cache=verified).ok
    # Something smuggled into the skeleton is caught by the skeleton's round-trip.
    skel = good.skeleton.replace(
        "    server {", "    upstream evil { server 6.6.6.6:80; }\n    server {", 1
    )
    assert not verify_rendered(replace(good, skeleton=skel), plan, cache=verified).ok


@pytest.mark.parametrize("where", [0, N // 2, N - 1])
def test_a_cold_verify_split_across_processes_catches_a_tampered_block_anywhere(where):
    s = spec()
    plan = make_plan(s, catalog())
    good = render_parts(plan, s.nginx)
    loc, text = good.locations[where]
    smuggled = text.replace(
        "proxy_http_version 1.1;", "proxy_http_version 1.1; proxy_pass http://evil;"
    )
    locations = (*good.locations[:where], (loc, smuggled), *good.locations[where + 1 :])
    findings = verify_rendered(replace(good, locations=locations), plan).findings
    assert any(f"/s{where}/" in f.message and "evil" in f.message for f in findings), findings
    # A block that swallows its neighbour keeps every block count but not the structure.
    loc, text = good.locations[where]
    opened = text.rstrip().removesuffix("}") + "location /nested/ {\n"
    closing = good.locations[where + 1] if where + 1 < N else None
    if closing is not None:
        locations = (*good.locations[:where], (loc, opened), *good.locations[where + 1 :])
        assert not verify_rendered(replace(good, locations=locations), plan).ok
