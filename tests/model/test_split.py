"""Which version an instance belongs to: meta, then tag, then `default`."""

from __future__ import annotations

import base64
import json

from nginxgen.model.catalog import Instance
from nginxgen.model.split import by_version, version_of
from nginxgen.model.validate import CatalogBuilder
from nginxgen.sources.etcd import add_kv


def inst(id: str, meta: dict[str, str] | None = None, tags: tuple[str, ...] = ()) -> Instance:
    return Instance(id, "carts", "10.0.0.1", 80, meta=tuple((meta or {}).items()), tags=tags)


def test_meta_then_tag_then_default() -> None:
    assert version_of(inst("a", {"version": "green"}, ("version=blue",))) == "green"
    assert version_of(inst("b", tags=("zone=a", "version=blue"))) == "blue"
    assert version_of(inst("c")) == "default"
    assert version_of(inst("d", {"release": "v2"}), key="release") == "v2"
    assert version_of(inst("e", tags=("release=v3",)), key="release") == "v3"


def test_an_invalid_version_name_takes_no_split_traffic() -> None:
    groups, invalid = by_version([inst("a", {"version": "bl ue"}), inst("b", {"version": "x"})])
    assert [i.id for i in invalid] == ["a"]
    assert list(groups) == ["x"]


def test_etcd_value_field_version_lands_in_meta() -> None:
    b = CatalogBuilder("etcd")
    for name, value in [
        ("a", {"host": "10.0.0.1", "port": 80, "version": "green"}),
        ("b", {"host": "10.0.0.2", "port": 80, "version": "green", "meta": {"version": "blue"}}),
    ]:
        kv = {
            "key": base64.b64encode(f"/svc/carts/{name}".encode()).decode(),
            "value": base64.b64encode(json.dumps(value).encode()).decode(),
        }
        add_kv(b, "/svc/", kv)
    a, b2 = b.build().services["carts"]
    assert version_of(a) == "green"
    assert version_of(b2) == "blue"  # meta names its own
