"""`nginxgen shift` under load through `nginxgen watch`: a push, never a reload."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import Backend, Client, Etcd, WatchedGateway, who_answers
from tests.helpers import poll_until as eventually
from tests.helpers.gateway import run_cli
from tests.helpers.servers import nginx_workers, settled_workers

SPLIT = {"app": {"split": {"weights": {"blue": 100, "green": 0}, "sticky": "none"}}}


def instances(blue: Backend, green: Backend) -> list[dict[str, Any]]:
    return [
        {"id": "b1", "address": blue.address, "meta": {"version": "blue"}},
        {"id": "g1", "address": green.address, "meta": {"version": "green"}},
    ]


def flip_under_load(gw: WatchedGateway) -> None:
    """4 client threads; `shift --to green`; all new requests on green, 0 failures, 0 reloads."""
    assert who_answers(gw.url, 20, fresh=True) == {"blue": 20}
    master = int((gw.dir / "nginx.pid").read_text())
    workers = settled_workers(master)
    reloads = gw.metric("nginxgen_reloads_total")
    clients = [Client(gw.url) for _ in range(4)]
    for c in clients:
        c.start()
    time.sleep(0.5)
    shifted = run_cli("shift", "-c", str(gw.spec), "app", "--to", "green")
    assert shifted.returncode == 0, shifted.stderr
    assert "blue=0 green=100" in shifted.stdout
    start = time.monotonic()
    eventually(lambda: gw.serves_only("green", 10), 10, "green serving", detail=gw.logs)
    took = time.monotonic() - start
    marks = [len(c.results) for c in clients]
    time.sleep(0.5)
    for c in clients:
        c.stop()
    assert [f for c in clients for f in c.failures] == []
    after = [r for c, m in zip(clients, marks, strict=True) for r in c.results[m:]]
    assert after and set(after) == {"green"}, set(after)
    assert int((gw.dir / "nginx.pid").read_text()) == master
    assert nginx_workers(master) == workers, "a reload replaced the workers"
    assert gw.metric("nginxgen_reloads_total") == reloads
    assert gw.metric("nginxgen_split_pushes_total") >= 1
    assert "pushed: service 'app': split blue=0 green=100 (registry override)" in gw.logs()
    # Within 1 s on a quiet machine; a loaded 2-core one gets room (the number is printed).
    print(f"shift -> all new requests on green: {took:.2f} s")
    assert took < 5.0


def test_shift_with_a_file_registry_is_a_push(watched_gateway, backends):
    blue, green = backends("blue"), backends("green")
    gw = watched_gateway({"app": instances(blue, green)}, extra={"services": SPLIT})
    flip_under_load(gw)
    shown = run_cli("shift", "-c", str(gw.spec), "--show")
    assert "app: blue=0 green=100 (from registry override" in shown.stdout


def test_shift_with_etcd_is_a_push_and_the_override_survives_an_outage(
    watched_gateway: Callable[..., WatchedGateway], etcd_server: Etcd, backends
):
    blue, green = backends("blue"), backends("green")
    for inst in instances(blue, green):
        value = {"address": inst["address"], "version": inst["meta"]["version"]}
        etcd_server.ctl("put", f"/services/app/{inst['id']}", json.dumps(value))
    gw = watched_gateway(
        registry={"kind": "etcd", "url": etcd_server.url, "read_timeout": "2s"},
        extra={"services": SPLIT, "defaults": {"warmup": "off"}},
    )
    flip_under_load(gw)
    key = "/services/.nginxgen/split/app"
    assert json.loads(etcd_server.ctl("get", key, "--print-value-only"))["weights"] == {
        "blue": 0,
        "green": 100,
    }
    etcd_server.stop()
    time.sleep(1.5)
    assert gw.serves_only("green", 10)  # kept while the registry is down
    etcd_server.start()


def test_sighup_with_edited_weights_is_a_push(watched_gateway, backends):
    import signal

    import yaml

    blue, green = backends("blue"), backends("green")
    gw = watched_gateway({"app": instances(blue, green)}, extra={"services": SPLIT})
    master = int((gw.dir / "nginx.pid").read_text())
    workers = settled_workers(master)
    data = yaml.safe_load(gw.spec.read_text())
    data["services"]["app"]["split"]["weights"] = {"blue": 0, "green": 100}
    gw.spec.write_text(yaml.safe_dump(data, sort_keys=False))
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    eventually(lambda: gw.serves_only("green", 10), 10, "green serving", detail=gw.logs)
    assert nginx_workers(master) == workers


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_the_guard_rolls_a_failing_canary_back_within_one_window(watched_gateway, backends):
    import requests

    blue, green = backends("blue"), backends("green")
    green.status = 500
    guarded = {
        "app": {
            "split": {
                "weights": {"blue": 50, "green": 50},
                "guard": {
                    "version": "green",
                    "max_5xx_percent": 2,
                    "window": "5s",
                    "min_requests": 20,
                },
            }
        }
    }
    gw = watched_gateway({"app": instances(blue, green)}, extra={"services": guarded})
    client = Client(gw.url)
    client.start()
    start = time.monotonic()
    eventually(lambda: "split guard:" in gw.logs(), 20, "the guard to trip", detail=gw.logs)
    took = time.monotonic() - start
    time.sleep(0.5)  # the push lands
    served_by_green = green.count
    for _ in range(100):
        assert requests.get(gw.url, timeout=5).headers["X-Backend"] == "blue"
    client.stop()
    assert green.count == served_by_green, "requests reached green after the rollback"
    assert gw.metric('nginxgen_split_guard_rollbacks_total{service="app",version="green"}') == 1
    log = gw.logs()
    assert "version 'green' answered" in log and "until an operator shifts" in log
    print(f"guard tripped after {took:.1f} s (window 5 s)")
    assert took < 5.0 + 5.0  # one window, plus room for a loaded machine
    # Per-version counters on the status listener, as the guard read them.
    status = yaml_status_listen(gw)
    text = requests.get(f"http://{status}/metrics", timeout=5).text
    assert 'service="app",version="green",status="5xx"' in text
    assert 'service="app",version="blue",status="2xx"' in text
    # It stays at 0 until an operator shifts: the override is in the registry too.
    shown = run_cli("shift", "-c", str(gw.spec), "--show")
    assert "app: blue=100 green=0" in shown.stdout


def yaml_status_listen(gw: WatchedGateway) -> str:
    import yaml

    return str(yaml.safe_load(gw.spec.read_text())["nginx"]["status_listen"])


def test_a_dead_version_gives_its_share_away_and_watch_says_so(watched_gateway, backends):
    import requests
    import yaml

    blue, green = backends("blue"), backends("green")
    split = {"app": {"split": {"weights": {"blue": 50, "green": 50}}}}
    gw = watched_gateway({"app": instances(blue, green)}, extra={"services": split})
    assert set(who_answers(gw.url, 40, fresh=True)) == {"blue", "green"}
    master = int((gw.dir / "nginx.pid").read_text())
    workers = settled_workers(master)
    clients = [Client(gw.url) for _ in range(2)]
    for c in clients:
        c.start()
    registry = gw.dir / "services.yaml"
    data = yaml.safe_load(registry.read_text())
    everyone = data["services"]["app"]
    data["services"]["app"] = [i for i in everyone if i["id"] != "g1"]
    registry.write_text(yaml.safe_dump(data))
    eventually(lambda: gw.serves_only("blue", 20), 10, "blue alone", detail=gw.logs)
    line = (
        "service 'app': version 'green' has no live instance; its share goes to the others "
        "(blue=100 green=0)"
    )
    eventually(lambda: line in gw.logs(), 10, "the one-line note", detail=gw.logs)
    # Green comes back: its share too. Both ways a push (nginx.endpoints dynamic).
    data["services"]["app"] = everyone
    registry.write_text(yaml.safe_dump(data))
    eventually(
        lambda: set(who_answers(gw.url, 40, fresh=True)) == {"blue", "green"},
        10,
        "green back",
        detail=gw.logs,
    )
    for c in clients:
        c.stop()
    assert [f for c in clients for f in c.failures] == []
    assert nginx_workers(master) == workers, "a reload replaced the workers"
    # Nobody up at all: a deliberate 503, as for any service with nobody alive.
    data["services"]["app"] = [{**i, "state": "down"} for i in everyone]
    registry.write_text(yaml.safe_dump(data))

    def unavailable() -> bool:
        r = requests.get(gw.url, timeout=5)
        return r.status_code == 503 and r.json() == {
            "error": "service unavailable",
            "service": "app",
        }

    eventually(unavailable, 10, "a 503 from the split", detail=gw.logs)
