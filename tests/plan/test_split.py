"""The weights in force: a dead version's share goes to the others, in one line."""

from __future__ import annotations

from nginxgen.plan.split import effective_weights, plan_split
from nginxgen.spec.split import Split


def split(**kw: object) -> Split:
    return Split.model_validate({"weights": {"blue": 90, "green": 10}, **kw})


def test_all_live_keeps_the_configured_shares() -> None:
    p = plan_split("carts", split(), frozenset({"blue", "green"}))
    assert p.effective == (("blue", 9000), ("green", 1000))
    assert p.note == ""
    assert p.summary() == "service 'carts': split blue=90 green=10 (spec)"


def test_a_dead_version_gives_its_share_to_the_others() -> None:
    p = plan_split("carts", split(), frozenset({"blue"}))
    assert p.effective == (("blue", 10000), ("green", 0))
    assert p.note == (
        "service 'carts': version 'green' has no live instance; its share goes to the "
        "others (blue=100 green=0)"
    )


def test_shares_go_in_proportion_and_add_up_exactly() -> None:
    w = effective_weights({"a": 33.33, "b": 33.33, "c": 33.34, "d": 0}, frozenset("abd"))
    assert sum(w.values()) == 10000
    assert w["c"] == 0 and w["d"] == 0 and w["a"] == w["b"] == 5000


def test_only_zero_weight_versions_alive_share_evenly() -> None:
    w = effective_weights({"blue": 100, "green": 0, "red": 0}, frozenset({"green", "red"}))
    assert w == {"blue": 0, "green": 5000, "red": 5000}
    assert effective_weights({"blue": 100}, frozenset()) == {"blue": 0}


def test_an_override_replaces_weights_and_the_document_is_what_lua_reads() -> None:
    s = split(
        sticky="$cookie_session",
        rules=[{"header": "X-Canary", "equals": "1", "to": "green"}],
        mirror={"to": "green", "percent": 5},
    )
    p = plan_split(
        "carts", s, frozenset({"blue", "green"}), weights={"blue": 50, "green": 50}, source="etcd"
    )
    assert p.document() == {
        "versions": [
            {"name": "blue", "upstream": "carts--blue", "bps": 5000, "live": True},
            {"name": "green", "upstream": "carts--green", "bps": 5000, "live": True},
        ],
        "sticky": "cookie_session",
        "rules": [
            {"kind": "header", "name": "X-Canary", "op": "equals", "value": "1", "to": "green"}
        ],
        "mirror": {"to": "green", "percent": 5.0},
    }
    dead_mirror = plan_split("carts", s, frozenset({"blue"}))
    assert "mirror" not in dead_mirror.document()
