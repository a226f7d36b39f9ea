"""The split guard on a driven clock: trips within one window, holds until an operator shifts."""

from __future__ import annotations

import json

from nginxgen.spec.split import Split
from nginxgen.status.traffic import Counts
from nginxgen.watch.split_guard import SplitGuard

SPLIT = Split.model_validate(
    {
        "weights": {"blue": 90, "green": 10},
        "guard": {"version": "green", "max_5xx_percent": 2, "window": "30s", "min_requests": 50},
    }
)
SPLITS = {"carts": SPLIT}
IN_FORCE = {"carts": {"blue": 90.0, "green": 10.0}}


def sample(green: int, green_5xx: int, blue: int = 1000) -> dict[tuple[str, str], Counts]:
    return {
        ("carts", "green"): Counts(green, green_5xx),
        ("carts", "blue"): Counts(blue, 0),
    }


def test_a_healthy_canary_never_trips_and_a_failing_one_trips_within_a_window() -> None:
    g = SplitGuard()
    total = errors = 0
    for t in range(0, 300, 5):  # healthy: 1 % errors
        total, errors = total + 100, errors + 1
        assert g.observe(float(t), sample(total, errors), SPLITS, IN_FORCE) == []
    tripped_at = None
    for t in range(300, 400, 5):  # now 10 % errors
        total, errors = total + 100, errors + 10
        trips = g.observe(float(t), sample(total, errors), SPLITS, IN_FORCE)
        if trips:
            tripped_at = t
            trip = trips[0]
            break
    assert tripped_at is not None and tripped_at - 300 <= 30
    assert trip.version == "green" and trip.service == "carts"
    assert json.loads(trip.override)["weights"] == {"blue": 100, "green": 0}
    assert "answered" in str(trip) and "until an operator shifts" in str(trip)


def test_too_few_requests_or_a_canary_at_zero_do_not_trip() -> None:
    g = SplitGuard()
    assert g.observe(0.0, sample(0, 0), SPLITS, IN_FORCE) == []
    assert g.observe(5.0, sample(40, 40), SPLITS, IN_FORCE) == []  # 40 < min_requests
    at_zero = {"carts": {"blue": 100.0, "green": 0.0}}
    assert g.observe(10.0, sample(400, 400), SPLITS, at_zero) == []


def test_the_pin_holds_while_the_registry_is_unchanged_and_ends_with_a_shift() -> None:
    g = SplitGuard()
    g.observe(0.0, sample(0, 0), SPLITS, IN_FORCE)
    (trip,) = g.observe(10.0, sample(100, 50), SPLITS, IN_FORCE)
    before = '{"weights":{"blue":90,"green":10}}'
    g.pin(trip, before)
    assert g.overrides({"carts": before}) == {"carts": trip.override}
    assert g.overrides({}) == {} and g.pinned == ()  # an operator cleared it
    g.pin(trip, before)
    # The guard's own write, re-serialized by a file registry, keeps it pinned.
    echoed = json.dumps(json.loads(trip.override), indent=1)
    assert g.overrides({"carts": echoed}) == {"carts": trip.override}
    assert g.observe(20.0, sample(200, 150), SPLITS, IN_FORCE) == []  # pinned: no new trip
    operator = '{"weights":{"blue":50,"green":50}}'
    assert g.overrides({"carts": operator}) == {"carts": operator}
    assert g.pinned == ()


def test_a_thousandth_sample_costs_nothing_extra_and_old_samples_go() -> None:
    g = SplitGuard()
    for t in range(1000):
        g.observe(float(t), sample(t * 10, 0), SPLITS, IN_FORCE)
    assert len(g._traffic["carts"].samples) <= 32
