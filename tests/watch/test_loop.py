"""The watch loop's pieces, driven by a fake Source (no nginx needed)."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from nginxgen.model.catalog import Catalog, Instance
from nginxgen.registry import UnusableVersion
from nginxgen.sources import RegistryError, Source
from nginxgen.sources.file import FileSource
from nginxgen.spec import FileRegistry, Spec
from nginxgen.watch.apply import Result
from nginxgen.watch.loop import Options, Watcher
from nginxgen.watch.telemetry import Health, Metrics
from tests.helpers import REPO, fake_master
from tests.helpers.clock import FakeClock
from tests.helpers.poll import poll_until
from tests.helpers.source import FakeSource


def make_spec(tmp_path: Path, **watch: object) -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": str(tmp_path / "unused.yaml")},
            "nginx": {
                "flavor": "nginx",
                "output": str(tmp_path / "nginx.conf"),
                "pid": str(tmp_path / "nginx.pid"),
                "status_listen": "off",
            },
            "watch": {"listen": "off", **watch},
            "routes": [{"path": "/", "service": "app"}],
        }
    )


@pytest.fixture
def watcher(tmp_path, monkeypatch):
    """Factory: a Watcher on `source` (and its clock), with no nginx binary to test with."""

    def make(source: Source, **watch: object) -> Watcher:
        monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
        spec = make_spec(tmp_path, **watch)
        return Watcher(
            tmp_path / "nginxgen.yaml", spec, source=source, clock=getattr(source, "clock", None)
        )

    return make


@pytest.fixture
def master(tmp_path):
    """A process that passes for the nginx master in nginx.pid (ignores SIGHUP)."""
    proc = fake_master("nginx: master process /usr/sbin/nginx", exit_on_hup=False)
    (tmp_path / "nginx.pid").write_text(f"{proc.pid}\n")
    yield proc
    proc.kill()
    proc.wait()


def test_apply_installs_then_reports_unchanged(watcher, tmp_path):
    w = watcher(FakeSource(9001))
    assert w.apply(w.source.read()).result is Result.APPLIED
    assert "server 127.0.0.1:9001" in (tmp_path / "nginx.conf").read_text()
    assert w.apply(w.source.read()).result is Result.UNCHANGED


def test_health_is_ok_only_while_a_master_serves_the_config(watcher, tmp_path):
    """Installed is not served: without nginx running, /healthz must not say ok."""
    w = watcher(FakeSource(9001))
    assert w.apply(w.source.read()).result is Result.APPLIED
    pid_file = tmp_path / "nginx.pid"
    code, text = w.health.status()
    assert code == 503, text
    # status_listen is off here: no generation to ask for, so the master's pid decides.
    assert text == f"generation - is not served: nginx is not running (no pid in {pid_file})"
    proc = fake_master("nginx: master process /usr/sbin/nginx", exit_on_hup=False)
    try:
        pid_file.write_text(f"{proc.pid}\n")
        assert w.health.status() == (200, "ok: generation -")
    finally:
        proc.kill()
        proc.wait()
    assert w.health.status()[1].endswith(f"(pid {proc.pid} from {pid_file} is gone)")


def test_invalid_text_is_not_installed_nor_retried_until_something_changes(
    watcher, tmp_path, monkeypatch
):
    source = FakeSource(9001)
    w = watcher(source)
    w.apply(source.read())
    good = (tmp_path / "nginx.conf").read_text()
    from nginxgen.verify import Finding

    invalid = "nginxgen.verify.incremental.round_trip"
    monkeypatch.setattr(invalid, lambda parsed, plan: [Finding("x", "bad")])
    source.set(9001, 9002)
    assert w.apply(source.read()).result is Result.FAILED
    assert (tmp_path / "nginx.conf").read_text() == good
    assert w.health.status() == (503, "last apply failed: validation: [x] bad")
    assert w.apply(source.read()).result is Result.SKIPPED
    monkeypatch.undo()
    source.set(9001, 9003)
    assert w.apply(source.read()).result is Result.APPLIED
    assert w.metrics.validation_failures._value.get() == 1


def test_debounce_applies_the_last_state_once_the_registry_is_quiet(watcher):
    clock = FakeClock()
    source = FakeSource(9001, clock=clock)
    w = watcher(source, debounce={"min": "150ms", "max": "5s"})
    catalog = source.read()
    start = clock.now
    for n, port in enumerate(range(9002, 9022)):  # 20 events, 20 ms apart
        source.at(start + 0.02 * n, port)
    settled = w.settle(catalog, start)
    assert [i.port for i in settled.services["app"]] == [9021]
    # Quiet for `min` after the last event (at 0.38 s), and not a moment longer.
    assert clock.now - start == pytest.approx(0.38 + 0.15)


def test_debounce_counts_the_quiet_from_the_event_not_from_its_read(watcher):
    clock = FakeClock()
    source = FakeSource(9001, clock=clock)
    w = watcher(source, debounce={"min": "150ms", "max": "5s"})
    read = source.read

    def slow_read():  # type: ignore[no-untyped-def]
        clock.advance(0.04)  # a large registry, a loaded machine
        return read()

    source.read = slow_read  # type: ignore[method-assign]
    start = clock.now
    source.at(start, 9002)
    catalog = source.read()  # the loop's read after the wake, 40 ms
    source.at(start + 0.1, 9003)  # one more event within the window
    settled = w.settle(catalog, start)
    assert [i.port for i in settled.services["app"]] == [9003]
    # Quiet for `min` after the event at 0.1 s (its 40 ms read not added on top).
    assert clock.now - start == pytest.approx(0.1 + 0.15)


def test_debounce_gives_up_waiting_for_quiet_at_max(watcher):
    clock = FakeClock()
    source = FakeSource(9001, clock=clock)
    w = watcher(source, debounce={"min": "200ms", "max": "500ms"})
    start = clock.now
    for n in range(1, 100):  # a registry that never stops changing
        source.at(start + 0.02 * n, 9001 + n)
    settled = w.settle(source.read(), start)
    assert clock.now - start == pytest.approx(0.5)
    assert [i.port for i in settled.services["app"]] == [9001 + 25]  # the state at `max`


def test_registry_errors_mark_stale_and_keep_the_applied_config(watcher, tmp_path, master):
    source = FakeSource(9001)
    w = watcher(source)
    w.apply(source.read())
    source.broken = True
    with pytest.raises(RegistryError):
        w.read()
    code, text = w.health.status()
    assert code == 503 and "stale" in text and "connection refused" in text
    assert w.metrics.stale._value.get() == 1
    assert "127.0.0.1:9001" in (tmp_path / "nginx.conf").read_text()
    source.broken = False
    w.read()
    assert w.health.status()[0] == 200


class BrokenFile(FakeSource):
    """A registry that answers, with content that cannot be used until version 1."""

    def read(self) -> Catalog:
        self._publish_due()
        if self.version < 1:
            raise UnusableVersion("fake file: services is not a mapping", str(self.version))
        return super().read()


def test_an_edit_of_a_broken_registry_ends_the_backoff_at_once(watcher):
    clock = FakeClock()
    source = BrokenFile(9001, clock=clock)
    w = watcher(source, backoff={"initial": "30s", "max": "30s"})
    with pytest.raises(UnusableVersion) as failed:
        w.read()
    start = clock.now
    source.at(start + 2, 9002)  # repaired two seconds into a backoff of 15..30 s
    assert w.back_off(failed.value) is True
    assert clock.now - start == pytest.approx(2)
    assert [i.port for i in w.read().services["app"]] == [9002]


def test_an_unreachable_registry_is_not_asked_until_the_backoff_is_over(watcher):
    clock = FakeClock()
    source = FakeSource(9001, clock=clock)
    source.broken = True
    w = watcher(source, backoff={"initial": "30s", "max": "30s"})
    waits: list[float] = []
    source.wait = lambda version, timeout: bool(waits.append(timeout))  # type: ignore[method-assign]
    with pytest.raises(RegistryError) as failed:
        w.read()
    start = clock.now
    assert w.back_off(failed.value) is False
    assert clock.now - start >= 15 and waits == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
def test_the_loop_reads_a_repaired_registry_file_on_its_inotify_event(watcher, tmp_path):
    path = tmp_path / "services.yaml"
    path.write_text("services: [1, 2]\n")  # broken from the start: the loop backs off
    source = FileSource(FileRegistry(kind="file", path=str(path), poll=60))
    w = watcher(source, backoff={"initial": "30s", "max": "30s"})
    loop = threading.Thread(target=w.loop, daemon=True)
    loop.start()
    try:
        poll_until(lambda: w.metrics.read_errors._value.get() >= 1, 20, "the failed read")
        time.sleep(0.3)  # well into the 15..30 s backoff
        repaired = time.monotonic()
        path.write_text("services:\n  app: [{id: a, address: 127.0.0.1:9005}]\n")
        output = tmp_path / "nginx.conf"
        poll_until(lambda: output.exists() and "9005" in output.read_text(), 12, "the repair")
        assert time.monotonic() - repaired < 12  # not at the backoff's end (15 s or later)
    finally:
        w.stopping = True
        loop.join(timeout=10)
        source.close()


def test_loop_wakes_when_a_planned_change_falls_due(watcher):
    clock = FakeClock()
    source = FakeSource(9001, clock=clock)
    w = watcher(source)
    w.apply(w.read())
    w.applier.next_change = clock.wall() + timedelta(milliseconds=200)
    start = clock.now
    assert w.wait_for_change(str(source.version)) == "warmup"
    # At the step, plus the margin that makes sure the plan sees it; not at the 1s slice.
    assert clock.now - start == pytest.approx(0.2 + 0.01)


def test_next_change_at_hook_is_none_without_time_based_policies(tmp_path):
    from nginxgen.plan import next_change_at

    assert next_change_at(make_spec(tmp_path), Catalog({}), datetime.now()) is None


def test_health_explains_itself():
    h = Health()
    assert h.status() == (503, "no config applied yet")
    h.applied, h.generation, h.held = True, "abc", "service 'a' emptied"
    assert h.status() == (200, "ok: generation abc; holding: service 'a' emptied")
    h.stale_since, h.stale_reason = 100.0, "etcd: timeout"
    assert h.status(now=130.0) == (
        503,
        "registry stale for 30s, serving the last good catalog: etcd: timeout",
    )


def test_a_config_being_installed_is_healthy_until_its_confirm_deadline():
    """Between nginx loading a new config and the sidecar confirming it, nginx serves a
    generation the sidecar has not recorded yet: that is a reload, not a fault."""
    clock = FakeClock()
    serves = ["old"]

    def served(generations: tuple[str, ...]) -> str | None:
        return None if serves[0] in generations else f"nginx serves generation {serves[0]}"

    h = Health(applied=True, generation="old", served=served, clock=clock)
    assert h.status() == (200, "ok: generation old")
    h.in_flight = ("new", clock.monotonic() + 12.0)
    serves[0] = "new"  # nginx took the reload; confirmation still polling
    assert h.status() == (200, "ok: generation old; reloading onto new")
    serves[0] = "old"  # or not yet
    assert h.status()[0] == 200
    clock.advance(12.5)  # past the deadline, an in-flight config proves nothing
    serves[0] = "new"
    assert h.status() == (503, "generation old is not served: nginx serves generation new")
    serves[0] = "other"  # something else entirely is never healthy
    clock.now -= 10
    assert h.status()[0] == 503
    # Confirmed: old workers may still answer with the generation before, for a while.
    h.in_flight, h.generation = None, "new"
    h.superseded = ("old", clock.monotonic() + 10.0)
    serves[0] = "old"
    assert h.status() == (200, "ok: generation new")
    clock.advance(10.5)
    assert h.status() == (503, "generation new is not served: nginx serves generation old")


def test_the_loop_marks_the_install_in_flight_and_clears_it(watcher, tmp_path, monkeypatch):
    w = watcher(FakeSource(9001), confirm_timeout="7s")
    seen: list[object] = []
    import nginxgen.watch.apply as apply_mod

    real = apply_mod.install

    def install(*args, **kwargs):
        seen.append((w.health.in_flight, w.clock.monotonic()))
        return real(*args, **kwargs)

    monkeypatch.setattr(apply_mod, "install", install)
    recorded: list[object] = []
    succeeded = w.applier._succeeded

    def record(*args, **kwargs):
        succeeded(*args, **kwargs)
        # The new generation is recorded while the install still counts as in flight:
        # no moment where nginx is ahead of what /healthz accepts.
        recorded.append((w.health.generation, w.health.in_flight))

    monkeypatch.setattr(w.applier, "_succeeded", record)
    assert w.apply(w.source.read()).result is Result.APPLIED
    ((applied, still),) = recorded
    assert still is not None and still[0] == applied
    (((generation, deadline), then),) = seen
    assert generation == w.health.generation
    assert then < deadline <= then + 7.0 + apply_mod.IN_FLIGHT_MARGIN
    assert w.health.in_flight is None


def test_the_status_document_follows_the_loop_and_says_what_is_held(watcher):
    w = watcher(FakeSource(9001, 9002, 9003, 9004))
    assert w.apply(w.source.read()).result is Result.APPLIED
    doc = w.instances.document()
    assert doc["generation"] == w.health.generation and doc["served_generation"] is None
    assert [(r["id"], r["state"], r["weight"]) for r in doc["services"]["app"]] == [
        (f"i{p}", "serving", 1) for p in (9001, 9002, 9003, 9004)
    ]
    w.source.set(9001)  # three of four vanish at once: held until confirmed
    w.apply(w.source.read())
    reasons = {r["id"]: r["reason"] for r in w.instances.document()["services"]["app"]}
    assert reasons == {
        "i9001": "",
        **{f"i{p}": "removal held until confirmed" for p in (9002, 9003, 9004)},
    }
    text = w.metrics.exposition().decode()
    series = 'id="i9002",peer="127.0.0.1:9002",service="app",state="serving"'
    assert f"nginxgen_instance_state{{{series}}} 1.0" in text


def test_metrics_follow_services_that_come_and_go():
    m = Metrics()
    m.set_catalog(Catalog({"a": (Instance("a1", "a", "127.0.0.1", 1),), "b": ()}))
    m.set_catalog(Catalog({"a": ()}))
    text = m.exposition().decode()
    assert 'nginxgen_service_instances{service="a"} 0.0' in text
    assert 'service="b"' not in text


def test_once_exits_1_when_the_registry_cannot_be_read(watcher):
    source = FakeSource(9001)
    source.broken = True
    w = watcher(source)
    w.options = Options(once=True)
    assert w.one_pass() == 1


def test_the_sidecar_example_spec_is_valid():
    from nginxgen.spec import load_spec

    spec = load_spec(REPO / "examples/sidecar/nginxgen.yaml")
    assert spec.watch.debounce.min == 0.2 and spec.nginx.status_listen == "127.0.0.1:9181"


def test_an_unexpected_failure_is_reported_not_fatal(watcher, tmp_path, monkeypatch):
    source = FakeSource(9001)
    w = watcher(source)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nginxgen.deploy.install.write_atomic", full_disk)
    assert w.apply(source.read()).result is Result.FAILED
    code, text = w.health.status()
    assert code == 503 and "No space left on device" in text


def test_a_failure_after_install_puts_the_old_bytes_back(watcher, tmp_path, monkeypatch):
    source = FakeSource(9001)
    w = watcher(source)
    old = b"# hand-edited\r\n# caf\xe9\r\n"
    (tmp_path / "nginx.conf").write_bytes(old)

    def broken_reload(*args: object, **kwargs: object) -> None:
        raise RuntimeError("reload machinery broke")

    monkeypatch.setattr("nginxgen.deploy.install.reload_nginx", broken_reload)
    assert w.apply(source.read()).result is Result.FAILED
    assert (tmp_path / "nginx.conf").read_bytes() == old
    assert "reload machinery broke" in w.health.status()[1]


def test_an_install_error_keeps_the_file_and_is_retried(watcher, tmp_path, monkeypatch):
    """Disk full: nothing changed, health says why, and the next pass tries again."""
    source = FakeSource(9001)
    w = watcher(source)
    from nginxgen.util.atomic_write import InstallError

    def full(*args: object, **kwargs: object) -> None:
        raise InstallError(f"cannot write {tmp_path / 'nginx.conf'}: no space left on device")

    monkeypatch.setattr("nginxgen.deploy.install.write_atomic", full)
    assert w.apply(source.read()).result is Result.FAILED
    assert w.health.status() == (
        503,
        f"last apply failed: install: cannot write {tmp_path / 'nginx.conf'}: "
        "no space left on device",
    )
    monkeypatch.undo()
    assert w.apply(source.read()).result is Result.APPLIED  # not SKIPPED


def test_an_adapter_bug_becomes_a_registry_error(watcher):
    source = FakeSource(9001)
    w = watcher(source)
    source.read = lambda: {}["boom"]  # type: ignore[method-assign]
    with pytest.raises(RegistryError):
        w.read()
    assert "KeyError" in w.health.stale_reason
    source.wait = lambda version, timeout: 1 / 0  # type: ignore[method-assign]
    with pytest.raises(RegistryError, match="ZeroDivisionError"):
        w._wait("0", 0.1)


def test_a_changed_certificate_reloads_once_with_reason_certificate(tmp_path, monkeypatch, master):
    """nginx.conf does not change when a certificate is renewed; nginx must still reload."""
    from tests.helpers.certs import make_cert, write_pair

    now = datetime.now(timezone.utc)
    cert, key = write_pair(tmp_path, "a", [make_cert(["a.test"], now=now)])
    spec = Spec.model_validate(
        {
            "registry": {"kind": "file", "path": str(tmp_path / "unused.yaml")},
            "nginx": {
                "flavor": "nginx",
                "output": str(tmp_path / "nginx.conf"),
                "pid": str(tmp_path / "nginx.pid"),
                "status_listen": "off",
                "listen": [{"port": 8443, "tls": True}],
            },
            "watch": {"listen": "off"},
            "hosts": [
                {
                    "server_names": ["a.test"],
                    "tls": {"cert": str(cert), "key": str(key)},
                    "routes": [{"path": "/", "service": "app"}],
                }
            ],
        }
    )
    monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
    source = FakeSource(9001)
    w = Watcher(
        tmp_path / "nginxgen.yaml", spec, source=source, clock=getattr(source, "clock", None)
    )
    reloads = w.metrics.reloads.labels("certificate")
    assert w.apply(source.read()).result is Result.APPLIED
    assert not w.applier.certs.changed()

    write_pair(tmp_path, "a", [make_cert(["a.test"], now=now)])  # renewed: same paths
    assert w.wait_for_change(str(source.version)) == "certificate"
    assert w.apply(source.read()).result is Result.APPLIED
    assert reloads._value.get() == 1
    # Served now: the next pass has nothing to do.
    assert w.apply(source.read()).result is Result.UNCHANGED
    assert reloads._value.get() == 1

    # A renewal that does not match its key is refused; the running config stays.
    other = make_cert(["a.test"], now=now)
    cert.write_bytes(other.pem())
    assert w.wait_for_change(str(source.version)) == "certificate"
    assert w.apply(source.read()).result is Result.FAILED
    assert reloads._value.get() == 1


def test_an_edited_template_reloads_once_with_reason_templates(tmp_path, monkeypatch, master):
    """A partial in templates_dir is read again when it changes: one re-render, one reload."""
    partials = tmp_path / "partials"
    partials.mkdir()
    wrapper = '{% include "nginxgen/gateway_location.conf.j2" %}\n'
    team = partials / "gateway_location.conf.j2"
    team.write_text(wrapper + '            add_header X-Team "a" always;\n')
    spec = make_spec(tmp_path).model_copy(update={"templates_dir": str(partials)})
    monkeypatch.setattr("nginxgen.watch.loop.nginx_for_test", lambda *args: None)
    source = FakeSource(9001)
    w = Watcher(
        tmp_path / "nginxgen.yaml", spec, source=source, clock=getattr(source, "clock", None)
    )
    reloads = w.metrics.reloads.labels("templates")
    conf = tmp_path / "nginx.conf"
    assert w.apply(source.read()).result is Result.APPLIED
    assert 'X-Team "a"' in conf.read_text()
    assert not w.applier.templates_edited()

    team.write_text(wrapper + '            add_header X-Team "b" always;\n')
    assert w.wait_for_change(str(source.version)) == "templates"
    outcome = w.apply(source.read())
    assert outcome.result is Result.APPLIED and outcome.reason == "templates"
    assert 'X-Team "b"' in conf.read_text() and reloads._value.get() == 1
    assert w.apply(source.read()).result is Result.UNCHANGED
    assert reloads._value.get() == 1

    # A partial that does not compile is reported; the templates that serve stay.
    team.write_text(wrapper + "{% if %}\n")
    assert not w.applier.templates_edited()
    assert w.apply(source.read()).result is Result.UNCHANGED
    # A new partial counts as an edit too.
    team.write_text(wrapper)
    (partials / "upstream.conf.j2").write_text('{% include "nginxgen/upstream.conf.j2" %}')
    assert w.wait_for_change(str(source.version)) == "templates"
    assert w.apply(source.read()).result is Result.APPLIED
    assert "X-Team" not in conf.read_text() and reloads._value.get() == 2


def test_service_gauges_skip_unchanged_tuples_and_follow_changed_ones():
    m = Metrics()
    one, two = (Instance("a1", "a", "127.0.0.1", 1),), (Instance("b1", "b", "127.0.0.1", 2),)
    m.set_catalog(Catalog({"a": one, "b": two}))
    m.instances.labels("a").set(7)  # a set behind its back: an unchanged tuple leaves it
    m.set_catalog(Catalog({"a": one, "b": two + (Instance("b2", "b", "127.0.0.1", 3),)}))
    text = m.exposition().decode()
    assert 'nginxgen_service_instances{service="a"} 7.0' in text
    assert 'nginxgen_service_instances{service="b"} 2.0' in text
    m.set_catalog(Catalog({"b": two}))
    text = m.exposition().decode()
    assert 'service="a"' not in text and 'nginxgen_service_instances{service="b"} 1.0' in text


def test_a_run_that_starts_on_the_config_serving_settles_its_heap_once(
    watcher, tmp_path, monkeypatch
):
    """Not the first push's work after nginx confirmed it (a full collection: ~0.5 s at
    10,000 services)."""
    from nginxgen.util.heap import Settler

    first = watcher(FakeSource(9001))
    assert first.apply(first.source.read()).result is Result.APPLIED
    settled: list[str] = []
    monkeypatch.setattr(Settler, "settle", lambda self: settled.append("full"))
    w = watcher(FakeSource(9001))  # a restarted sidecar: the same text is installed
    assert w.apply(w.source.read()).result is Result.UNCHANGED
    assert settled == ["full"]
    assert w.apply(w.source.read()).result is Result.UNCHANGED
    assert settled == ["full"], "once per run"
