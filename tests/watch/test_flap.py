"""nginxgen.flap: flap damping, on an injected clock (seconds passed in by the test)."""

from __future__ import annotations

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.spec.watch import Flap
from nginxgen.watch.flap import FlapDamper

STABLE = Instance("b", "app", "127.0.0.1", 9002)


def read(*instances: Instance, other: tuple[Instance, ...] = ()) -> Catalog:
    services = {"app": instances}
    if other:
        services["other"] = other
    return Catalog(services)


def flapper(state: str) -> Instance:
    return Instance("a", "app", "127.0.0.1", 9001, state=state)


def states(catalog: Catalog, service: str = "app") -> dict[str, str]:
    return {i.id: i.state for i in catalog.services.get(service, ())}


def test_an_instance_flapping_every_50ms_is_held_out_until_stable_for_hold():
    damper = FlapDamper(Flap(changes=3, window=30, hold=30))
    now, started, released, pinned = 0.0, [], [], []
    for n in range(200):  # 10 s of up/down every 50 ms
        now = n * 0.05
        catalog = read(flapper("up" if n % 2 == 0 else "down"), STABLE)
        damper.observe(catalog, now)
        result = damper.apply(catalog, now)
        started += result.started
        released += result.released
        pinned.append(states(result.catalog)["a"])
    # The 4th change (more than 3) pins it out; from then on nginx never sees it flip.
    assert pinned[:4] == ["up", "down", "up", "down"]
    assert set(pinned[4:]) == {"down"}
    assert started == [
        "service 'app' instance 'a' is flapping (4 changes between serving and not within "
        "30s): held out of nginx until it has been stable for 30s"
    ]
    assert released == []
    assert damper.next_release() == now + 30
    # It stops flapping (up from now on): held until `hold` after its last change.
    damper.observe(read(flapper("up"), STABLE), now + 0.05)
    last_change = now + 0.05
    for t in (last_change + 1, last_change + 29.9):
        result = damper.apply(read(flapper("up"), STABLE), t)
        assert states(result.catalog) == {"a": "down", "b": "up"} and not result.started
        assert result.held == ("service 'app' instance 'a'",)
        assert result.keys == frozenset({("app", "a")})
    result = damper.apply(read(flapper("up"), STABLE), last_change + 30)
    assert states(result.catalog) == {"a": "up", "b": "up"}
    assert result.released == ("service 'app' instance 'a': stable for 30s, released",)
    assert result.held == () and damper.next_release() is None


def test_the_last_instance_of_a_service_is_held_in_not_out():
    """Holding the only instance out would make its service answer 503 to everyone."""
    damper = FlapDamper(Flap(changes=3, window=30, hold=10))
    # Flapping by presence (a registry that lists only healthy instances) and by state.
    cycle = [read(flapper("up")), read(), read(flapper("up")), read(flapper("down"))]
    pinned, started = [], []
    for n in range(20):
        catalog = cycle[n % 4]
        damper.observe(catalog, n * 0.05)
        result = damper.apply(catalog, n * 0.05)
        started += result.started
        pinned.append(states(result.catalog).get("a", "absent"))
    assert pinned[:4] == ["up", "absent", "up", "down"]
    assert set(pinned[4:]) == {"up"}
    assert started == [
        "service 'app' instance 'a' is flapping (4 changes between serving and not within "
        "30s): held in nginx (the last instance its service has serving) until it has been "
        "stable for 10s"
    ]


def test_a_restart_or_a_deploy_is_not_flapping():
    damper = FlapDamper(Flap(changes=3, window=30, hold=30))
    timeline = [
        (0, read(flapper("up"), STABLE)),
        (5, read(flapper("down"), STABLE)),  # restart: out
        (8, read(flapper("up"), STABLE)),  # and back
        (20, read(flapper("draining"), STABLE)),  # drained
        (25, read(STABLE)),  # and removed: four changes, spread out
        (40, read(flapper("starting"), STABLE)),
        (50, read(flapper("up"), STABLE)),
    ]
    for now, catalog in timeline:
        damper.observe(catalog, now)
        result = damper.apply(catalog, now)
        assert result.catalog == catalog and not result.held and not result.started


def test_changes_older_than_the_window_do_not_count():
    damper = FlapDamper(Flap(changes=3, window=30, hold=30))
    for n in range(20):  # one change every 11 s: never more than 3 within 30 s
        catalog = read(flapper("up" if n % 2 else "down"), STABLE)
        damper.observe(catalog, n * 11.0)
        assert not damper.apply(catalog, n * 11.0).held


def test_only_services_that_changed_are_compared_and_others_pass_untouched():
    damper = FlapDamper(Flap(changes=1, window=30, hold=30))
    others = tuple(Instance(f"o{i}", "other", "127.0.0.1", 10000 + i) for i in range(50))
    for n in range(4):
        catalog = read(flapper("up" if n % 2 == 0 else "down"), STABLE, other=others)
        damper.observe(catalog, float(n))
        result = damper.apply(catalog, float(n))
    assert result.catalog.services["other"] is others
    assert states(result.catalog) == {"a": "down", "b": "up"}


def test_flap_off_never_holds():
    damper = FlapDamper(Flap.model_validate("off"))
    for n in range(100):
        catalog = read(flapper("up" if n % 2 == 0 else "down"), STABLE)
        damper.observe(catalog, n * 0.05)
        assert damper.apply(catalog, n * 0.05).catalog is catalog
    assert damper.next_release() is None


def test_the_spec_key_and_its_default():
    from nginxgen.spec.watch import WatchSpec

    assert WatchSpec().flap == Flap(changes=3, window=30.0, hold=30.0)
    custom = WatchSpec.model_validate({"flap": {"changes": 5, "window": "1m", "hold": "90s"}})
    assert (custom.flap.changes, custom.flap.window, custom.flap.hold) == (5, 60.0, 90.0)
    assert WatchSpec.model_validate({"flap": "off"}).flap.enabled is False
