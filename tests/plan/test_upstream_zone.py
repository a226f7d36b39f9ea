"""Each upstream's shared-memory zone is sized from its servers (nginx.upstream_zone is
the minimum), so a big service never fails `nginx -t` with "no memory in upstream zone"."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.pipeline import BuildCache, build, nginx_for_test
from nginxgen.plan import make_plan
from nginxgen.plan.service import zone_size
from nginxgen.spec import SpecError, parse_spec


def spec_for(tmp_path: Path, zone: str | None = None) -> object:
    # Zones are for static upstreams (endpoints: reload); the Lua balancer needs none.
    nginx = "{listen: 8080, endpoints: reload" + (f", upstream_zone: {zone}}}" if zone else "}")
    text = (
        "registry: {kind: file, path: s.yaml}\n"
        f"nginx: {nginx}\n"
        "routes:\n  - {path: /, service: big}\n  - {path: /small/, service: small}\n"
    )
    return parse_spec(text, tmp_path / "nginxgen.yaml")


def instances(service: str, n: int, ipv6: bool = False) -> tuple[Instance, ...]:
    def host(i: int) -> str:
        return f"2001:db8::{i // 65536:x}:{i % 65536:x}" if ipv6 else f"10.0.{i // 250}.{i % 250}"

    return tuple(Instance(f"{service}-{i}", service, host(i), 65535) for i in range(n))


def catalog(n: int, ipv6: bool = False) -> Catalog:
    return Catalog({"big": instances("big", n, ipv6), "small": instances("small", 2)})


def zones(tmp_path: Path, n: int, zone: str | None = None) -> dict[str, str | None]:
    plan = make_plan(spec_for(tmp_path, zone), catalog(n))  # type: ignore[arg-type]
    return {u.name: u.zone for u in plan.upstreams}


def test_small_upstreams_keep_the_configured_zone_and_big_ones_grow(tmp_path: Path) -> None:
    assert zones(tmp_path, 10) == {"big": "64k", "small": "64k"}
    sizes = [zone_size(64 * 1024, n) for n in (1, 16, 17, 64, 65, 500, 5000)]
    assert sizes == sorted(sizes) and sizes[0] == 64 * 1024
    # A configured minimum stays when it is already enough.
    assert zones(tmp_path, 65, "4m") == {"big": "4m", "small": "4m"}
    assert zones(tmp_path, 65, "off") == {"big": None, "small": None}


@pytest.mark.parametrize("n", [1, 60, 65, 500, 5000])
def test_the_zone_holds_twice_the_servers_by_the_measured_cost(n: int) -> None:
    # benchmarks/upstream_zone.py measures nginx 1.22: 0.77 KiB per IPv4 server, 0.83 KiB
    # per IPv6 one, ~1.03 KiB for a 253-character name, on top of nginx's 32 KiB minimum.
    assert zone_size(64 * 1024, n) >= 32 * 1024 + 2 * n * 1056


@pytest.mark.parametrize(("n", "ipv6"), [(65, False), (500, False), (5000, False), (500, True)])
def test_nginx_accepts_an_upstream_of_any_size(tmp_path: Path, n: int, ipv6: bool) -> None:
    spec = spec_for(tmp_path)
    binary = nginx_for_test(spec, True)  # type: ignore[arg-type]
    result = build(spec, catalog(n, ipv6), binary=binary, cache=BuildCache())  # type: ignore[arg-type]
    assert result.verdict.ok, [str(f) for f in result.verdict.findings][:3]
    assert len(result.plan.upstream("big").servers) == n  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("zone", "words"), [("abc", "a size"), ("16k", "at least 32k"), ("64 k", "a size")]
)
def test_upstream_zone_must_be_a_size_nginx_accepts(tmp_path: Path, zone: str, words: str) -> None:
    with pytest.raises(SpecError, match=rf"nginx.upstream_zone.*{words}"):
        spec_for(tmp_path, f"'{zone}'")
