"""The trust boundary: what a registry may and may not put into the catalog."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from nginxgen.model.validate import CatalogBuilder, InvalidEntry, make_instance, safe_name
from nginxgen.sources.base import RegistryError
from nginxgen.sources.file import parse_registry


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("[::1]:8080", "::1", 8080),
        ("[2001:DB8::1]:1", "2001:db8::1", 1),
        ("Users.Example.com:443", "users.example.com", 443),
        ("svc-1.internal.:9000", "svc-1.internal", 9000),
    ],
)
def test_valid_addresses(address: str, host: str, port: int) -> None:
    inst = make_instance("s", id="i", address=address)
    assert (inst.host, inst.port) == (host, port)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "host:port"),
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:65536", "out of range"),
        ("127.0.0.1:http", "not a number"),
        ("a;b:80", "not an IP address or DNS name"),
        ("evil}server x:80", "not an IP address or DNS name"),
        ("host\nname:80", "not an IP address or DNS name"),
        ("$host:80", "not an IP address or DNS name"),
        ("::1:80", "host:port"),
        ("[::1]80", "[ipv6]:port"),
        ("-bad.example:80", "not an IP address or DNS name"),
        ("999.1.1.1:80", "not an IP address or DNS name"),
        ("[fe80::1%eth0]:80", "scope"),
    ],
)
def test_invalid_addresses_are_refused_with_the_reason(address: str, reason: str) -> None:
    with pytest.raises(InvalidEntry, match=reason.replace("[", r"\[")):
        make_instance("s", id="i", address=address)


def test_weights_are_rounded_into_nginx_range() -> None:
    assert make_instance("s", id="i", address="1.2.3.4:5", weight=0.4).weight == 1
    assert make_instance("s", id="i", address="1.2.3.4:5", weight="7").weight == 7
    assert make_instance("s", id="i", address="1.2.3.4:5", weight=10**9).weight == 1000
    with pytest.raises(InvalidEntry, match="weight"):
        make_instance("s", id="i", address="1.2.3.4:5", weight=-1)
    with pytest.raises(InvalidEntry, match="weight"):
        make_instance("s", id="i", address="1.2.3.4:5", weight="heavy")


def test_unsafe_service_names_map_deterministically_without_collisions() -> None:
    assert safe_name("users") == "users"
    a, b = safe_name("user svc"), safe_name("user;svc")
    assert a != b
    assert a == safe_name("user svc")
    assert a.startswith("user_svc_")
    for name in (a, b, safe_name("ü"), safe_name("}{"), safe_name("_x")):
        assert name[0].isalnum() and set(name) <= set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
        )


def test_a_renamed_service_is_a_note_not_a_dropped_entry() -> None:
    b = CatalogBuilder("test")
    b.add("user svc", id="u1", address="10.0.0.1:80")
    b.add("user svc", id="u2", address="10.0.0.2:80")  # said once, not per instance
    cat = b.build()
    name = safe_name("user svc")
    assert [i.id for i in cat.services[name]] == ["u1", "u2"]
    assert cat.dropped == ()
    assert cat.notes == (f"service 'user svc' renamed to {name!r} (the name is not nginx-safe)",)


def test_builder_keeps_good_drops_bad_and_says_why() -> None:
    b = CatalogBuilder("test")
    b.add("api", id="ok", address="10.0.0.1:80")
    b.add("api", id="ok", address="10.0.0.2:80")  # duplicate id
    b.add("api", id="bad", address="10.0.0.3:80", state="sleeping")
    b.add("api", id='x"y', address="10.0.0.4:80")
    cat = b.build()
    assert [i.id for i in cat.services["api"]] == ["ok"]
    reasons = [str(d) for d in cat.dropped]
    assert any("'ok'" in r and "duplicate" in r for r in reasons)
    assert any("'bad'" in r and "state must be one of" in r for r in reasons)
    assert any("not allowed" in r for r in reasons)


def test_file_registry_envelope_and_entries() -> None:
    cat = parse_registry(
        b"""
services:
  users:
    - {id: u1, address: 127.0.0.1:9001, weight: 2, registered_at: 2026-11-29T10:00:00Z}
    - {id: u2, host: 127.0.0.1, port: 9002, colour: blue}
    - [not, a, mapping]
    - {address: 127.0.0.1:9003}
  empty:
""",
        "services.yaml",
    )
    assert [i.id for i in cat.services["users"]] == ["u1"]
    assert cat.services["empty"] == ()
    reasons = "\n".join(map(str, cat.dropped))
    assert "'u2': unknown field(s): colour" in reasons
    assert "'#2': instance must be a mapping" in reasons
    assert "'#3': missing 'id'" in reasons
    with pytest.raises(RegistryError, match="services.yaml: expected a mapping"):
        parse_registry(b"[1, 2]", "services.yaml")
    with pytest.raises(RegistryError, match="not valid YAML"):
        parse_registry(b"services: {a: [", "services.yaml")


def test_fingerprint_ignores_read_time_and_order() -> None:
    def cat(order: list[str]):
        b = CatalogBuilder("t")
        for i in order:
            b.add("s", id=i, address=f"10.0.0.{i}:80")
        return b.build()

    assert cat(["1", "2"]).fingerprint() == cat(["2", "1"]).fingerprint()
    assert cat(["1"]).fingerprint() != cat(["1", "2"]).fingerprint()


BAD_CONVERSIONS = [
    ({"weight": float("inf")}, "weight"),
    ({"weight": "1e999"}, "weight"),
    ({"weight": "9" * 400}, "weight"),
    ({"weight": float("-inf")}, "weight"),
    ({"registered_at": "9999-12-31T23:59:59-23:00"}, "registered_at"),
    ({"registered_at": "0001-01-01T00:00:00+23:00"}, "registered_at"),
    (
        {"registered_at": datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=23)))},
        "registered_at",
    ),
    ({"registered_at": 10**400}, "registered_at"),
    ({"registered_at": float("inf")}, "registered_at"),
    ({"address": "127.0.0.1:²"}, "port is not a number"),
    ({"address": "127.0.0.1:٨٠"}, "port is not a number"),
    ({"address": None, "host": "127.0.0.1", "port": "٨٠"}, "port is not a number"),
    ({"address": None, "host": "127.0.0.1", "port": "８０"}, "port is not a number"),
    ({"id": [1, 2]}, "instance id"),
    ({"id": {"a": 1}}, "instance id"),
    ({"id": 10**5000}, "instance id"),
    ({"address": None, "host": ["127.0.0.1"], "port": 80}, "host"),
    ({"state": ["up"]}, "state"),
]


@pytest.mark.parametrize(("fields", "reason"), BAD_CONVERSIONS)
def test_a_value_that_fails_to_convert_drops_its_instance_only(fields, reason) -> None:
    b = CatalogBuilder("test")
    b.add("api", id="good", address="10.0.0.1:80")
    entry = {"id": "bad", "address": "10.0.0.2:80", **fields}
    b.add("api", **{k: v for k, v in entry.items() if v is not None})
    b.add("api", id="good-2", address="10.0.0.3:80")
    cat = b.build()
    assert [i.id for i in cat.services["api"]] == ["good", "good-2"]
    assert len(cat.dropped) == 1 and reason in cat.dropped[0].reason
    assert len(str(cat.dropped[0])) < 300  # huge values are cut, never printed whole


def test_finite_weights_beyond_the_range_are_clamped() -> None:
    for weight in (10**300, 10**400, 1e300, "1e300"):
        assert make_instance("s", id="i", address="1.2.3.4:5", weight=weight).weight == 1000


def test_long_values_are_cut_in_reasons() -> None:
    b = CatalogBuilder("test")
    b.add("api", id="x", address="h" * 100_000 + ":80")
    b.add("api" * 50_000, id="y" * 100_000, address="10.0.0.1:80")
    assert b.build().dropped
    for d in b.build().dropped:
        assert len(str(d)) < 400, str(d)[:500]


def test_a_bad_tag_or_meta_entry_is_dropped_alone_and_the_instance_kept() -> None:
    b = CatalogBuilder("test")
    b.add(
        "api",
        id="a1",
        address="10.0.0.1:80",
        tags=["backup", "bad\ntag", "v2", "x" * 300],
        meta={"zone": "a", "evil": "}\x00", "big": 10**5000, "n": None},
    )
    b.add("api", id="a2", address="10.0.0.2:80", tags="not-a-list", meta=["not", "a", "map"])
    cat = b.build()
    a1, a2 = cat.services["api"]
    assert a1.tags == ("backup", "v2") and a1.meta == (("zone", "a"),)
    assert a2.tags == () and a2.meta == ()
    reasons = [str(d) for d in cat.dropped]
    # One line per field, naming service, instance and field; the instance is kept.
    assert len(reasons) == 4, reasons
    assert any("'a1'" in r and "tags" in r and "bad\\ntag" in r for r in reasons)
    assert any("'a1'" in r and "meta" in r and "'evil'" in r and "'big'" in r for r in reasons)
    assert any("'a2'" in r and "tags" in r for r in reasons)
    assert all("instance kept" in r for r in reasons)
    assert {d.field for d in cat.dropped} == {"tags", "meta"}


def test_a_json_registry_with_characters_beyond_the_bmp_loads() -> None:
    # json.dumps writes 😀 as the surrogate pair \ud83d\ude00, which YAML 1.1 refuses.
    raw = json.dumps({"services": {"users": [{"id": "u1", "address": "10.0.0.1:80",
                                               "meta": {"note": "😀"}}]}}).encode()  # fmt: skip
    assert b"\\ud83d" in raw
    catalog = parse_registry(raw, "services.json")
    assert [i.id for i in catalog.services["users"]] == ["u1"]
    # JSON's own spellings of infinity are refused like YAML's .inf.
    raw = b'{"services": {"users": [{"id": "u1", "address": "10.0.0.1:80", "weight": Infinity}]}}'
    assert "finite" in parse_registry(raw, "services.json").dropped[0].reason
    with pytest.raises(RegistryError, match=r"services.json:1: not valid YAML"):
        parse_registry(b'{"services": {"users": [}', "services.json")


def test_the_fingerprint_memo_reuses_unchanged_services_and_sees_every_change() -> None:
    from nginxgen.model.catalog import Catalog, Instance, ServiceDigests

    a = (Instance("a1", "a", "10.0.0.1", 80),)
    b = (Instance("b1", "b", "10.0.0.2", 80),)
    memo = ServiceDigests()
    first = Catalog({"b": b, "a": a}).fingerprint(memo)
    assert first == Catalog({"a": a, "b": b}).fingerprint(), "order of the read: no matter"
    kept = memo._known["a"]
    moved = Catalog({"a": a, "b": (Instance("b1", "b", "10.0.0.3", 80),)}).fingerprint(memo)
    assert moved != first and memo._known["a"] is kept
    assert Catalog({"a": a, "b": b}).fingerprint(memo) == first, "no stale digest"
    assert Catalog({"a": a}).fingerprint(memo) == Catalog({"a": a}).fingerprint()
