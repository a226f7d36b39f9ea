"""Warm-up: the weight math, and how the plan applies it. Pure and fast."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nginxgen.model.observed import Observed
from nginxgen.model.validate import CatalogBuilder
from nginxgen.plan import make_plan, next_change_at
from nginxgen.plan.warmup import ramp, ramped_weight, scale_factor
from nginxgen.spec import Warmup, parse_spec
from nginxgen.watch.policy_state import PolicyState

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_default_ramp_climbs_ten_percent_per_period_to_full_in_the_tenth() -> None:
    w = Warmup()  # 10 % every 30 s
    fractions = [ramp(w, T0, at(30 * k + 1)).fraction for k in range(11)]
    assert fractions == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0]
    assert ramp(w, T0, at(0)).next_at == at(30)
    assert ramp(w, T0, at(269)).next_at == at(270)
    assert ramp(w, T0, at(270)).next_at is None  # at full weight: nothing more to schedule


def test_ramp_off_unknown_age_and_uneven_steps() -> None:
    assert ramp(Warmup(enabled=False), T0, T0).fraction == 1.0
    assert ramp(Warmup(), None, T0).fraction == 1.0  # age unknown: treated as old
    w = Warmup(step_percent=30, period=1)  # 30, 60, 90, 100
    assert [ramp(w, T0, at(k)).fraction for k in range(5)] == [0.3, 0.6, 0.9, 1.0, 1.0]


@pytest.mark.parametrize(
    ("step", "base_max", "factor"),
    [(10, 1, 10), (25, 1, 4), (33, 1, 100), (50, 3, 2), (10, 200, 5), (10, 1000, 1)],
)
def test_scale_factor_makes_steps_integral_within_nginx_cap(
    step: int, base_max: int, factor: int
) -> None:
    assert scale_factor(step, base_max) == factor


@given(
    st.integers(1, 1000),
    st.integers(1, 100),
    st.integers(1, 1000),
    st.floats(0.01, 1.0),
)
def test_ramped_weights_stay_valid_nginx_weights(
    base: int, step: int, base_max: int, fraction: float
) -> None:
    base_max = max(base, base_max)
    factor = scale_factor(step, base_max)
    w = ramped_weight(base, fraction, factor)
    assert 1 <= w <= 1000
    assert base * factor <= 1000


SPEC = """\
registry: {kind: file, path: s.yaml}
defaults: {warmup: {step_percent: 10, period: 30s}}
services: {%s}
routes: [{path: /, service: app}]
"""


def spec(services: str = "", tmp: Path = Path("/tmp")):
    return parse_spec(SPEC % services, tmp / "nginxgen.yaml")


def catalog(*instances: dict):
    b = CatalogBuilder("t")
    for fields in instances:
        b.add("app", **fields)
    return b.build()


def weights(plan) -> dict[str, int]:
    (up,) = plan.upstreams
    return {s.instance_id: s.weight for s in up.servers}


OLD = {"id": "old", "address": "10.0.0.1:80", "registered_at": T0 - timedelta(days=1)}


def test_new_instance_ramps_in_a_scaled_upstream_then_weights_return_to_base() -> None:
    cat = catalog(OLD, {"id": "new", "address": "10.0.0.2:80", "registered_at": T0})
    assert weights(make_plan(spec(), cat, at(1))) == {"old": 10, "new": 1}
    assert weights(make_plan(spec(), cat, at(31))) == {"old": 10, "new": 2}
    assert weights(make_plan(spec(), cat, at(269))) == {"old": 10, "new": 9}
    assert weights(make_plan(spec(), cat, at(270))) == {"old": 1, "new": 1}
    assert next_change_at(spec(), cat, at(31)) == at(60)
    assert next_change_at(spec(), cat, at(270)) is None
    notes = make_plan(spec(), cat, at(31)).notes
    assert any("'new': warming up, step 2 of 10 (20% of its weight)" in n for n in notes)


def test_registered_in_the_future_counts_as_now() -> None:
    cat = catalog(OLD, {"id": "new", "address": "10.0.0.2:80", "registered_at": at(3600)})
    assert weights(make_plan(spec(), cat, at(0))) == {"old": 10, "new": 1}
    assert next_change_at(spec(), cat, at(0)) == at(30)


def test_first_seen_is_used_without_registered_at_and_return_restarts_the_ramp() -> None:
    cat = catalog(OLD, {"id": "new", "address": "10.0.0.2:80"})
    key = "app/new@10.0.0.2:80"
    assert weights(make_plan(spec(), cat, at(100))) == {"old": 1, "new": 1}  # age unknown
    seen = Observed(first_seen={key: at(0)})
    assert weights(make_plan(spec(), cat, at(100), seen)) == {"old": 10, "new": 4}
    back = Observed(first_seen={key: at(-9999)}, returned={key: at(95)})
    assert weights(make_plan(spec(), cat, at(100), back)) == {"old": 10, "new": 1}


def test_full_redeploy_starts_everyone_at_full_weight_and_says_so() -> None:
    cat = catalog(
        {"id": "a", "address": "10.0.0.1:80", "registered_at": T0, "weight": 3},
        {"id": "b", "address": "10.0.0.2:80", "registered_at": T0},
    )
    plan = make_plan(spec(), cat, at(5))
    assert weights(plan) == {"a": 3, "b": 1}
    assert any("full redeploy" in n for n in plan.notes)
    assert plan.next_change_at is None


def test_warmup_off_per_service_and_heavy_base_weights_stay_under_the_cap() -> None:
    new = {"id": "new", "address": "10.0.0.2:80", "registered_at": T0, "weight": 500}
    cat = catalog({**OLD, "weight": 400}, new)
    assert weights(make_plan(spec("app: {warmup: off}"), cat, at(1))) == {"old": 400, "new": 500}
    # factor 2 keeps 500 x 2 = 1000 legal; 10 % of 1000 is 100
    assert weights(make_plan(spec(), cat, at(1))) == {"old": 800, "new": 100}


def test_pseudo_dead_instances_leave_unless_the_whole_service_would() -> None:
    cat = catalog(OLD, {"id": "b", "address": "10.0.0.2:80"})
    plan = make_plan(spec(), cat, at(0), Observed(dead=frozenset({"app/b@10.0.0.2:80"})))
    assert weights(plan) == {"old": 1}
    everyone = frozenset({"app/b@10.0.0.2:80", "app/old@10.0.0.1:80"})
    plan = make_plan(spec(), cat, at(0), Observed(dead=everyone))
    assert weights(plan) == {"old": 1, "b": 1}
    assert any("every instance fails its health probe" in n for n in plan.notes)


def test_state_file_survives_a_restart_and_a_new_address_restarts_the_ramp(tmp_path) -> None:
    path = tmp_path / "state.json"
    sp = spec()
    first = catalog({"id": "old", "address": "10.0.0.1:80"})
    state = PolicyState(path)
    state.observe(first, at(-500))  # fresh state: 'old' predates nginxgen
    state.save()
    with_new = catalog(
        {"id": "old", "address": "10.0.0.1:80"}, {"id": "n", "address": "10.0.0.2:80"}
    )
    obs = state.observe(with_new, at(0))
    state.save()
    assert weights(make_plan(sp, with_new, at(40), obs)) == {"old": 10, "n": 2}

    # A restart: a new process reads the file; the ramp neither restarts nor skips.
    restarted = PolicyState(path)
    obs = restarted.observe(with_new, at(65))
    assert weights(make_plan(sp, with_new, at(65), obs)) == {"old": 10, "n": 3}

    # Same id, new address: a new instance, its ramp starts over.
    moved = catalog({"id": "old", "address": "10.0.0.1:80"}, {"id": "n", "address": "10.0.0.3:80"})
    obs = restarted.observe(moved, at(70))
    assert weights(make_plan(sp, moved, at(70), obs)) == {"old": 10, "n": 1}


def test_state_file_is_written_only_when_something_changed(tmp_path) -> None:
    path = tmp_path / "state.json"
    state = PolicyState(path)
    state.observe(catalog(OLD), at(0))
    state.save()
    path.unlink()  # a marker: a save that writes brings the file back
    state.observe(catalog(OLD), at(10))
    state.save()
    assert not path.exists()  # the watch loop saves every pass; this one had nothing new
    state.observe(catalog(OLD, {"id": "n", "address": "10.0.0.2:80"}), at(20))
    state.save()
    assert "app/n@10.0.0.2:80" in path.read_text()


def test_starting_gets_no_traffic_and_ramps_from_when_it_turns_up(tmp_path) -> None:
    state = PolicyState(tmp_path / "s.json")
    state.observe(catalog(OLD), at(-100))
    starting = catalog(OLD, {"id": "n", "address": "10.0.0.2:80", "state": "starting"})
    obs = state.observe(starting, at(0))
    assert weights(make_plan(spec(), starting, at(0), obs)) == {"old": 1}
    up = catalog(OLD, {"id": "n", "address": "10.0.0.2:80"})
    obs = state.observe(up, at(300))
    assert weights(make_plan(spec(), up, at(300), obs)) == {"old": 10, "n": 1}


def test_pseudo_dead_return_ramps_again(tmp_path) -> None:
    state = PolicyState(tmp_path / "s.json")
    cat = catalog(OLD, {"id": "b", "address": "10.0.0.2:80"})
    state.observe(cat, at(-1000))
    state.observe(cat, at(0), dead={"app/b@10.0.0.2:80"})
    obs = state.observe(cat, at(10))
    assert weights(make_plan(spec(), cat, at(10), obs)) == {"old": 10, "b": 1}


def test_corrupt_state_file_is_replaced_without_ramping_the_fleet(tmp_path, caplog) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    cat = catalog({"id": "a", "address": "10.0.0.1:80"}, {"id": "b", "address": "10.0.0.2:80"})
    obs = PolicyState(path).observe(cat, at(0))
    assert weights(make_plan(spec(), cat, at(0), obs)) == {"a": 1, "b": 1}
    assert "not a nginxgen state file" in caplog.text


def test_cli_render_records_first_seen_and_ramps_a_newcomer(tmp_path) -> None:
    import json
    import subprocess
    import sys

    from tests.helpers import write_spec

    spec_doc = {
        "nginx": {"output": "out/nginx.conf", "endpoints": "reload"},
        "routes": [{"path": "/", "service": "app"}],
    }
    one = [{"id": "a", "address": "127.0.0.1:9001"}]
    spec_path = write_spec(tmp_path, spec_doc, {"app": one})
    out = tmp_path / "nginx.conf"

    def render() -> dict:
        cmd = [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec_path)]
        cmd += ["-o", str(out), "--no-nginx-test", "--json"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert render()["next_change_at"] is None
    state = tmp_path / "out" / "nginxgen-state.json"
    assert json.loads(state.read_text())["instances"]["app/a@127.0.0.1:9001"]["first_seen"] is None
    write_spec(tmp_path, spec_doc, {"app": one + [{"id": "b", "address": "127.0.0.1:9002"}]})
    summary = render()
    assert summary["next_change_at"] is not None
    assert any("'b': warming up, step 1 of 10" in n for n in summary["notes"]), summary
    assert "server 127.0.0.1:9002 weight=1 " in out.read_text()
    assert "server 127.0.0.1:9001 weight=10 " in out.read_text()
