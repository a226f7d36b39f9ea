"""model/catalog.py ServiceMap: a catalog's services that say what changed since the last.

Every later stage trusts `changed_since` to name at least every service that differs, so
the property here is that it never misses one (a superset is fine), across chains of
maps, plain dicts in between and chains longer than the depth kept.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nginxgen.model.catalog import (
    LINEAGE_DEPTH,
    Catalog,
    Instance,
    ServiceDigests,
    ServiceMap,
    changed_since,
    derive,
)

NAMES = ("a", "b", "c", "d")


def inst(service: str, n: int, weight: int = 1) -> Instance:
    return Instance(f"i{n}", service, f"10.0.0.{n}", 80, weight)


def test_a_derived_map_names_what_changed_and_counts_instances() -> None:
    first = derive(None, {"a": (inst("a", 1),), "b": (inst("b", 2),)}, {"a", "b"})
    assert first.base is None and first.instance_count == 2
    second = derive(first, {**first, "b": (inst("b", 2), inst("b", 3)), "c": ()}, {"b", "c"})
    assert changed_since(second, first) == {"b", "c"}
    assert changed_since(second, second) == set()
    assert second.instance_count == 3 == Catalog(second).instance_count
    third = derive(second, {"a": first["a"], "c": ()}, {"b"})  # b removed
    assert changed_since(third, first) == {"b", "c"}
    assert third.instance_count == 1


def test_unknown_ancestry_means_compare_everything() -> None:
    first = derive(None, {"a": (inst("a", 1),)}, {"a"})
    plain = dict(first)
    assert changed_since(first, None) is None
    assert changed_since(first, plain) is None, "an equal plain dict is not an ancestor"
    assert changed_since(plain, first) is None
    other = derive(None, dict(first), set())
    assert changed_since(other, first) is None, "another chain"


def test_the_chain_is_cut_past_its_depth() -> None:
    maps = [derive(None, {"a": ()}, {"a"})]
    for n in range(LINEAGE_DEPTH + 5):
        maps.append(derive(maps[-1], {"a": (inst("a", n),)}, {"a"}))
    assert changed_since(maps[-1], maps[-LINEAGE_DEPTH + 1]) == {"a"}
    assert changed_since(maps[-1], maps[0]) is None  # let go: compare everything
    depth, node = 0, maps[-1]
    while node.base is not None:
        depth, node = depth + 1, node.base
    assert depth < LINEAGE_DEPTH


services = st.dictionaries(
    st.sampled_from(NAMES),
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), max_size=3, unique_by=lambda t: t[0]),
)
step = st.fixed_dictionaries(
    {
        "services": services,
        "extra": st.sets(st.sampled_from(NAMES), max_size=2),  # named but unchanged
        "plain": st.booleans(),  # a source that cannot say: a plain dict
    }
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=12))
def test_changed_since_never_misses_a_change_and_digests_stay_exact(steps: list[dict]) -> None:
    made: list[dict[str, tuple[Instance, ...]]] = []
    digests = ServiceDigests()
    last: dict[str, tuple[Instance, ...]] | None = None
    for s in steps:
        fresh = {
            name: tuple(inst(name, n, w) for n, w in sorted(rows))
            for name, rows in sorted(s["services"].items())
        }
        old = last or {}
        # As a source hands them out: an unchanged service keeps its very tuple.
        kept = {n: old[n] if old.get(n) == t else t for n, t in fresh.items()}
        moved = {n for n in kept.keys() | old.keys() if old.get(n) is not kept.get(n)}
        current = kept if s["plain"] else derive(last, kept, moved | s["extra"])
        for earlier in made:
            names = changed_since(current, earlier)
            if names is not None:
                differ = {n for n in current.keys() | earlier.keys()
                          if current.get(n) is not earlier.get(n)}  # fmt: skip
                assert differ <= names
        if isinstance(current, ServiceMap):
            assert current.instance_count == sum(len(v) for v in current.values())
        assert Catalog(current).fingerprint(digests) == Catalog(dict(current)).fingerprint()
        made.append(current)
        last = current
