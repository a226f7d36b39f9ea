"""Traffic policies through a real nginx and real backends that count what they receive."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from nginxgen.model.observed import Observed
from nginxgen.pipeline import Build, BuildCache, build, ensure_runtime_dirs
from nginxgen.sources.file import FileSource
from nginxgen.spec import load_spec
from nginxgen.util.atomic_write import write_atomic
from nginxgen.watch.policies import Policies
from nginxgen.watch.policy_state import PolicyState
from tests.helpers import Backend, Nginx, free_port, who_answers, write_spec
from tests.helpers import nginx_workers as workers
from tests.helpers import seconds_until as eventually

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


class Gateway:
    """nginxgen's render pass, driven by hand the way the watch loop drives it."""

    def __init__(self, workdir: Path, runner: Callable[..., Nginx], spec: dict[str, Any]) -> None:
        self.dir = workdir
        self.runner = runner
        self.port = free_port()
        self.spec_extra = spec
        self.nginx: Nginx | None = None
        self.conf = workdir / "nginx.conf"
        self.cache = BuildCache()  # one per gateway, as a watcher keeps one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def registry(self, services: dict[str, Any]) -> None:
        spec = {
            "nginx": {
                "flavor": "nginx",
                "listen": f"127.0.0.1:{self.port}",
                "pid": "nginx.pid",
                "output": "nginx.conf",
                "worker_processes": 1,
            },
            "routes": [{"path": "/", "service": "app"}],
            **self.spec_extra,
        }
        write_spec(self.dir, spec, services)

    def apply(self, now: datetime | None = None, observed: Observed | None = None) -> Build:
        """Render, install, (re)start nginx and wait until only new workers serve."""
        spec = load_spec(self.dir / "nginxgen.yaml")
        result = build(
            spec, self.catalog(), binary=None, cache=self.cache, now=now, observed=observed
        )
        assert result.verdict.ok, result.verdict.findings
        ensure_runtime_dirs(spec)
        write_atomic(self.conf, result.text)
        if self.nginx is None:
            self.nginx = self.runner(self.conf, self.dir / "nginx.pid", self.port)
        else:
            assert self.nginx.proc is not None
            master = self.nginx.proc.pid
            old = workers(master)
            self.nginx.reload()
            eventually(lambda: bool(workers(master)) and not workers(master) & old)
        return result

    def catalog(self):
        spec = load_spec(self.dir / "nginxgen.yaml")
        return FileSource(spec.registry).read()  # type: ignore[arg-type]


@pytest.fixture
def gateway(workdir, nginx_runner) -> Callable[[dict[str, Any]], Gateway]:
    return lambda spec: Gateway(workdir, nginx_runner, spec)


def share(url: str, name: str, n: int = 216) -> float:
    """Share of n GETs answered by `name`. Sent 8 at a time: the one nginx worker still
    picks servers in its weighted round-robin order, and the backends are slow one by one.
    """
    with ThreadPoolExecutor(8) as pool:
        seen = sum(pool.map(lambda _: who_answers(url, n // 8), range(8)), Counter())
    total = sum(seen.values())
    seen = Counter(dict(seen))
    assert all(k in ("a", "b", "c") for k in seen), seen
    return seen[name] / total


# --- warm-up ----------------------------------------------------------------------------


def test_warmup_share_rises_step_by_step_and_a_restart_keeps_the_ramp(
    gateway, backends, workdir
) -> None:
    a, b = backends("a"), backends("b")
    gw = gateway({"defaults": {"warmup": {"step_percent": 25, "period": "1s"}}})
    gw.registry({"app": [{"id": "a", "address": a.address}]})
    state_file = workdir / "state.json"
    state = PolicyState(state_file)
    gw.apply(T0, state.observe(gw.catalog(), T0))  # first sight: 'a' predates nginxgen
    state.save()

    gw.registry({"app": [{"id": "a", "address": a.address}, {"id": "b", "address": b.address}]})
    now = T0 + timedelta(seconds=0.5)
    shares = []
    for step in range(5):
        if step == 2:
            state = PolicyState(state_file)  # the sidecar restarts: a new process, same file
        result = gw.apply(now, state.observe(gw.catalog(), now))
        state.save()
        shares.append(share(gw.url + "/x", "b"))
        if result.plan.next_change_at is None:
            break
        # What the watch loop's schedule hook does: wake at the next step boundary.
        now = result.plan.next_change_at + timedelta(milliseconds=10)
    # b weight 1:4, 2:4, 3:4 of a's, then both at base weight: 1/5, 1/3, 3/7, 1/2
    expected = [0.2, 1 / 3, 3 / 7, 0.5]
    assert len(shares) == 4, shares
    for got, want in zip(shares, expected, strict=True):
        assert abs(got - want) < 0.04, (shares, expected)


# --- drain ------------------------------------------------------------------------------


def test_drain_finishes_requests_in_flight_and_sends_new_ones_elsewhere(gateway, backends) -> None:
    a, b = backends("a"), backends("b")
    gw = gateway({"defaults": {"warmup": "off"}})
    gw.registry({"app": [{"id": "a", "address": a.address}, {"id": "b", "address": b.address}]})
    gw.apply()
    a.delay = 3.0
    results: list[requests.Response] = []

    def slow() -> None:
        results.append(requests.get(gw.url + "/slow", timeout=30))

    threads = []
    while a.count == 0:  # round robin: within a few requests one is in flight at a
        t = threading.Thread(target=slow)
        t.start()
        threads.append(t)
        eventually(lambda: a.count + b.count >= len(threads))
    assert a.count == 1

    drained = [{"id": "a", "address": a.address, "state": "draining"}]
    gw.registry({"app": drained + [{"id": "b", "address": b.address}]})
    gw.apply()
    seen = who_answers(gw.url + "/new", 50)
    assert seen == Counter({"b": 50}), seen
    assert a.count == 1  # nothing new reached the draining instance
    for t in threads:
        t.join(30)
    assert [r.status_code for r in results] == [200] * len(threads)
    assert "a" in {r.headers["X-Backend"] for r in results}  # the slow one finished at a


def test_hash_balance_keeps_the_mapping_when_an_instance_drains(gateway, backends) -> None:
    a, b, c = backends("a"), backends("b"), backends("c")
    gw = gateway({"services": {"app": {"balance": "hash $request_uri"}}})
    entries = [{"id": x.name, "address": x.address} for x in (a, b, c)]
    gw.registry({"app": entries})
    gw.apply()

    def mapping() -> dict[str, str]:
        with requests.Session() as s:
            return {u: s.get(f"{gw.url}/k{u}", timeout=10).headers["X-Backend"] for u in range(60)}

    before = mapping()
    assert set(before.values()) == {"a", "b", "c"}
    gw.registry({"app": entries[:2] + [{**entries[2], "state": "draining"}]})
    gw.apply()
    after = mapping()
    assert "c" not in after.values()
    moved = [u for u in before if before[u] != "c" and after[u] != before[u]]
    assert moved == [], moved  # only c's keys moved; a's and b's stayed put


# --- pseudo-dead ------------------------------------------------------------------------


def test_pseudo_dead_instance_leaves_within_fall_intervals_and_returns_ramping(
    gateway, backends
) -> None:
    a, b = backends("a"), backends("b")
    probe = {"path": "/healthz", "interval": "0.2s", "timeout": "0.5s", "fall": 2, "rise": 2}
    gw = gateway({"defaults": {"probe": probe}})
    gw.registry({"app": [{"id": "a", "address": a.address}, {"id": "b", "address": b.address}]})
    policies = Policies(load_spec(gw.dir / "nginxgen.yaml")).start()

    def apply() -> Build:
        now = datetime.now(timezone.utc)
        result = gw.apply(now, policies.observe(gw.catalog(), now))
        policies.installed()
        return result

    try:
        apply()
        assert set(who_answers(gw.url + "/x", 20)) == {"a", "b"}

        flipped = time.monotonic()
        a.health_status = 500  # the process answers, the application is sick
        eventually(policies.changed.is_set)
        detected = time.monotonic() - flipped
        apply()
        left = time.monotonic() - flipped
        assert detected < 2 * 0.2 + 1.5, detected  # fall x interval, plus a busy machine
        assert who_answers(gw.url + "/x", 30) == Counter({"b": 30})
        print(f"pseudo-dead detected after {detected:.2f}s, traffic left after {left:.2f}s")

        a.health_status = 200
        eventually(policies.changed.is_set)
        result = apply()
        assert any("'a': warming up, step 1 of 10" in n for n in result.plan.notes)
        seen = who_answers(gw.url + "/x", 110)
        assert 0 < seen["a"] < seen["b"] / 4, seen  # back, at 10 % of its weight

        a.health_status = b.health_status = 500
        eventually(lambda: len(policies.prober.dead()) == 2 if policies.prober else False)
        result = apply()
        assert any("every instance fails its health probe" in n for n in result.plan.notes)
        seen = who_answers(gw.url + "/x", 20)
        assert sum(seen[k] for k in ("a", "b")) == 20, seen  # never take the service down
    finally:
        policies.close()


# --- failover ---------------------------------------------------------------------------


def failover_gateway(gateway, backs: list[Backend]) -> Gateway:
    base = {"on": ["error", "timeout", "http_502"], "tries": 3}
    gw = gateway(
        {
            "defaults": {"warmup": "off", "health": {"max_fails": 0}},
            "routes": [
                {"path": "/plain/", "service": "app", "failover": base},
                {
                    "path": "/retry/",
                    "service": "app",
                    "failover": {**base, "on": [*base["on"], "non_idempotent"]},
                },
                {"path": "/two/", "service": "app", "failover": {**base, "tries": 2}},
            ],
        }
    )
    gw.registry({"app": [{"id": x.name, "address": x.address} for x in backs]})
    gw.apply()
    return gw


def test_one_backend_killed_and_all_gets_still_succeed(gateway, backends) -> None:
    backs = [backends(n) for n in "abc"]
    gw = failover_gateway(gateway, backs)
    backs[1].stop()
    seen = who_answers(gw.url + "/plain/x", 100)
    assert sum(seen[k] for k in ("a", "c")) == 100, seen


def test_post_is_retried_only_with_non_idempotent(gateway, backends) -> None:
    backs = [backends(n) for n in "abc"]
    gw = failover_gateway(gateway, backs)
    backs[0].status = 502

    def posts(path: str, n: int = 30) -> tuple[Counter[int], int]:
        before = sum(x.count for x in backs)
        with requests.Session() as s:
            codes = Counter(
                s.post(gw.url + path, data=b"{}", timeout=10).status_code for _ in range(n)
            )
        return codes, sum(x.count for x in backs) - before

    codes, reached = posts("/plain/p")
    assert reached == 30  # each POST reached exactly one backend: no retry
    assert codes[502] >= 5 and codes[200] + codes[502] == 30, codes
    codes, reached = posts("/retry/p")
    assert codes == Counter({200: 30}), codes
    assert reached > 30  # the ones that met the failing backend were retried


@pytest.mark.parametrize(("path", "tries"), [("/two/", 2), ("/plain/", 3)])
def test_when_every_backend_fails_each_request_makes_exactly_tries_attempts(
    gateway, backends, path, tries
) -> None:
    backs = [backends(n) for n in "abc"]
    gw = failover_gateway(gateway, backs)
    for x in backs:
        x.status = 502
    with requests.Session() as s:
        codes = Counter(s.get(f"{gw.url}{path}g", timeout=10).status_code for _ in range(20))
    assert codes == Counter({502: 20})
    assert sum(x.count for x in backs) == 20 * tries
