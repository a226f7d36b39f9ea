from __future__ import annotations

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.spec import RemovalGuard
from nginxgen.watch.guard import RemovalHold, restore, suspicious_removals


def inst(service: str, n: int, state: str = "up") -> Instance:
    return Instance(
        id=f"{service}-{n}", service=service, host="127.0.0.1", port=9000 + n, state=state
    )


def cat(**services: list[Instance]) -> Catalog:
    return Catalog({k: tuple(v) for k, v in services.items()})


def test_emptied_and_vanished_services_are_suspicious():
    before = cat(a=[inst("a", 1), inst("a", 2)], b=[inst("b", 1)])
    keys, reasons = suspicious_removals(before, cat(a=[]), 0.5)
    assert keys == {("a", "a-1"), ("a", "a-2"), ("b", "b-1")}
    assert "service 'a' emptied" in reasons[0] and "'b' gone from the registry" in reasons[1]


def test_share_threshold_and_deliberate_removals():
    before = cat(a=[inst("a", i) for i in range(4)])
    # 2 of 4 is not more than half: an ordinary scale-down.
    assert suspicious_removals(before, cat(a=[inst("a", 0), inst("a", 1)]), 0.5)[0] == set()
    # 3 of 4 at once is.
    keys, reasons = suspicious_removals(before, cat(a=[inst("a", 0)]), 0.5)
    assert len(keys) == 3 and "lost 3 of 4" in reasons[0]
    # Instances that were draining in the previous read were announced: deliberate.
    drained = cat(a=[inst("a", 0), *(inst("a", i, "draining") for i in (1, 2, 3))])
    assert suspicious_removals(drained, cat(a=[inst("a", 0)]), 0.5)[0] == set()
    # The registry keeping them as `down`/`draining` is a deliberate decision too.
    down = cat(a=[inst("a", 0), *(inst("a", i, "down") for i in (1, 2, 3))])
    assert suspicious_removals(before, down, 0.5)[0] == set()
    # A new service and growth are never suspicious.
    assert (
        suspicious_removals(before, cat(a=[*before.services["a"]], z=[inst("z", 1)]), 0.5)[0]
        == set()
    )


def test_hold_until_consecutive_reads_over_the_period_agree():
    hold = RemovalHold(RemovalGuard(confirm_reads=3, confirm_period=10))
    accepted = cat(a=[inst("a", 1)], b=[inst("b", 1)])
    empty_a = cat(a=[], b=[inst("b", 1), inst("b", 2)])
    first = hold.check(accepted, empty_a, now=0)
    assert first.held is not None and hold.holding
    # The held instance is back in the effective catalog; the unrelated change passes.
    assert first.catalog.services["a"] == (inst("a", 1),)
    assert len(first.catalog.services["b"]) == 2
    assert hold.check(first.catalog, empty_a, now=5).held is not None  # 2 reads
    assert hold.check(first.catalog, empty_a, now=9).held is not None  # 3 reads, 9s < 10s
    released = hold.check(first.catalog, empty_a, now=10)
    assert released.held is None and released.catalog.services["a"] == ()
    assert released.released and not hold.holding


def test_a_hiccup_that_recovers_clears_the_hold():
    hold = RemovalHold(RemovalGuard(confirm_reads=2, confirm_period=0))
    accepted = cat(a=[inst("a", 1)])
    assert hold.check(accepted, cat(a=[]), now=0).held is not None
    assert hold.check(accepted, accepted, now=1).held is None
    # A new suspicion starts counting from one again.
    assert hold.check(accepted, cat(a=[]), now=2).held is not None


def test_restore_keeps_current_versions_of_present_instances():
    prev = cat(a=[inst("a", 1), inst("a", 2)])
    cur = cat(a=[Instance("a-2", "a", "127.0.0.1", 9002, weight=7)])
    merged = restore(cur, prev, frozenset({("a", "a-1")}))
    assert [(i.id, i.weight) for i in merged.services["a"]] == [("a-1", 1), ("a-2", 7)]


def test_hold_counts_reads_against_the_catalog_from_before_the_hold():
    hold = RemovalHold(RemovalGuard(confirm_reads=3, confirm_period=0))
    accepted = cat(a=[inst("a", 1), inst("a", 2), inst("a", 3)])
    mostly_gone = cat(a=[inst("a", 9)])  # 3 gone, 1 new: net 2 of 3
    first = hold.check(accepted, mostly_gone, now=0)
    assert first.held is not None
    # Each held read keeps a-1..a-3 next to the new a-9 until the third read confirms.
    second = hold.check(first.catalog, mostly_gone, now=1)
    assert second.held is not None
    assert {i.id for i in second.catalog.services["a"]} == {"a-1", "a-2", "a-3", "a-9"}
    assert hold.check(second.catalog, mostly_gone, now=2).held is None


def test_replacement_in_one_read_is_a_deploy_not_an_outage():
    before = cat(a=[inst("a", 1), inst("a", 2)])
    assert suspicious_removals(before, cat(a=[inst("a", 3), inst("a", 4)]), 0.5)[0] == set()
    # Two gone, one new: net loss 1 of 2 is within the share.
    assert suspicious_removals(before, cat(a=[inst("a", 3)]), 0.5)[0] == set()
    # Four gone, one new: net 3 of 4 is not.
    four = cat(a=[inst("a", i) for i in range(1, 5)])
    keys, reasons = suspicious_removals(four, cat(a=[inst("a", 9)]), 0.5)
    assert len(keys) == 4 and "1 new" in reasons[0]


def test_an_applied_removal_is_never_put_back_by_a_later_hold():
    # a is held (emptied); meanwhile b loses one of four, an ordinary scale-down that is
    # applied. When b then loses most of the rest, the hold must protect what was last
    # applied (b-1..b-3), not the catalog from before the first hold (which had b-4).
    hold = RemovalHold(RemovalGuard(confirm_reads=3, confirm_period=0))
    accepted = cat(a=[inst("a", 1)], b=[inst("b", i) for i in range(1, 5)])
    first = hold.check(accepted, cat(a=[], b=list(accepted.services["b"])), now=0)
    assert first.held is not None
    scaled = cat(a=[], b=[inst("b", i) for i in range(1, 4)])
    second = hold.check(first.catalog, scaled, now=1)
    assert [i.id for i in second.catalog.services["b"]] == ["b-1", "b-2", "b-3"]
    third = hold.check(second.catalog, cat(a=[], b=[inst("b", 1)]), now=2)
    assert third.held is not None
    assert [i.id for i in third.catalog.services["b"]] == ["b-1", "b-2", "b-3"]
    assert third.held.keys == {("a", "a-1"), ("b", "b-2"), ("b", "b-3")}
    # Confirmed: what the registry says, and b-4 never came back on the way.
    for now in (3, 4):
        last = hold.check(third.catalog, cat(a=[], b=[inst("b", 1)]), now=now)
        assert "b-4" not in {i.id for i in last.catalog.services["b"]}
    assert last.held is None and last.released


def test_a_held_instance_is_put_back_as_last_applied():
    # While a-1..a-3 are held, a-4 (still registered) changes weight, then vanishes too:
    # it is held with the weight nginx last got, not the one from before the hold.
    hold = RemovalHold(RemovalGuard(confirm_reads=5, confirm_period=0))
    accepted = cat(a=[inst("a", i) for i in range(1, 5)])
    first = hold.check(accepted, cat(a=[inst("a", 4)]), now=0)
    assert first.held is not None  # 3 of 4 at once
    heavier = Instance("a-4", "a", "127.0.0.1", 9004, weight=9)
    second = hold.check(first.catalog, cat(a=[heavier]), now=1)
    assert second.held is not None and heavier in second.catalog.services["a"]
    third = hold.check(second.catalog, cat(a=[]), now=2)
    assert third.held is not None
    assert {i.id: i.weight for i in third.catalog.services["a"]} == {
        "a-1": 1,
        "a-2": 1,
        "a-3": 1,
        "a-4": 9,
    }
