"""deploy/journal.py and SnapshotTexts.record: a confirmed push is one journal record next
to the boot snapshot; the snapshot is rewritten only now and then."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nginxgen.deploy import journal
from nginxgen.deploy.feed import (
    JOURNAL_SHARE,
    SnapshotTexts,
    snapshot_generation,
    write_snapshot,
)
from nginxgen.deploy.journal import frame, header, journal_path, parse
from nginxgen.plan import PlanMemo
from nginxgen.plan.endpoints import changed_endpoints, endpoints
from nginxgen.util.atomic_write import InstallError
from tests.helpers.snapshot import boot_endpoints

NAMES = tuple("abcdefghijklmnopqrst")  # enough services for a few records per snapshot


def _dynamic_plan(tmp_path: Any, memo: Any, weights: dict[str, int]) -> Any:
    """A dynamic plan of the 20 services, each with 3 instances; `weights` of the first."""
    from nginxgen.model.catalog import Catalog, Instance
    from nginxgen.plan import make_plan
    from nginxgen.spec import Spec

    spec = Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {"output": str(tmp_path / "nginx.conf")},
            "routes": [{"path": f"/{n}/", "service": n} for n in NAMES],
        }
    )
    services = {
        n: tuple(
            Instance(f"{n}{i}", n, f"10.0.0.{i}", 80, weights.get(n, 1) if i == 1 else 1)
            for i in (1, 2, 3)
        )
        for n in NAMES
    }
    return make_plan(spec, Catalog(services), memo=memo)


def doc(gen: int, **ports: int) -> bytes:
    services = {n: {"peers": [{"host": "10.0.0.1", "port": p}]} for n, p in ports.items()}
    return json.dumps({"generation": gen, "services": services}).encode()


def test_records_are_framed_and_read_back_in_order() -> None:
    data = header(7) + frame(doc(8, a=1)) + frame(doc(9, b=2))
    got = parse(data)
    assert got is not None and got.base == 7 and got.cut == ""
    assert [json.loads(p)["generation"] for p in got.payloads] == [8, 9]
    assert parse(b"") is None and parse(b'{"generation": 1}\n') is None
    assert parse(b"nginxgen-endpoints-journal 1 base=x\n") is None


def test_a_torn_last_record_is_ignored_wherever_the_write_stopped() -> None:
    whole = header(7) + frame(doc(8, a=1))
    last = frame(doc(9, b=2))
    for cut in range(1, len(last)):
        got = parse(whole + last[:cut])
        assert got is not None, cut
        assert [json.loads(p)["generation"] for p in got.payloads] == [8], cut
        assert got.cut.startswith(f"{cut} bytes at offset {len(whole)}: "), (cut, got.cut)


def test_a_damaged_record_ends_the_journal_there() -> None:
    first, second = frame(doc(8, a=1)), frame(doc(9, b=2))
    bad = first.replace(b'"port": 1', b'"port": 7')  # same length, wrong checksum
    got = parse(header(7) + bad + second)
    assert got is not None and got.payloads == ()
    assert "checksum does not match" in got.cut


def test_a_record_header_is_read_as_strictly_as_nginx_reads_it() -> None:
    """Lua's pattern takes digits, a space and 8 hex digits: nothing int() would also take."""
    payload = doc(8, a=1)
    crc = b"%08x" % zlib.crc32(payload)
    for bad in (b"+%d %s", b"%d 0x%s", b"%d %s_", b" %d %s", b"%d  %s"):
        head = bad % (len(payload), crc[2:] if b"0x" in bad else crc)
        got = parse(header(7) + head + b"\n" + payload + b"\n")
        assert got is not None and got.payloads == () and "header" in got.cut, bad
    wide = b"%d 0x00%s" % (len(payload), crc[4:])  # 8 characters, int(..., 16) takes it
    got = parse(header(7) + wide + b"\n" + payload + b"\n")
    assert got is not None and got.payloads == (), wide


def test_the_replay_stops_at_the_first_record_nginx_refuses(tmp_path) -> None:
    """As feed.lua's replay: records after a refused one are not applied (they would
    serve a state that never existed), and the generation is the last applied one's."""
    path = tmp_path / "endpoints.json"
    write_snapshot(str(path), 42, {"a": {"peers": []}})
    with open(journal_path(str(path)), "ab") as fh:
        fh.write(frame(doc(50, a=1)) + frame(b"[1]") + frame(doc(60, b=2)))
    assert snapshot_generation(str(path)) == 50
    (tmp_path / "endpoints.json.journal").write_bytes(
        header(42) + frame(doc(50, a=1)) + frame(doc(49, b=1)) + frame(doc(60, b=2))
    )
    assert snapshot_generation(str(path)) == 50, "a generation not above the one before"
    done = journal.replay(42, {"a": 0}, (tmp_path / "endpoints.json.journal").read_bytes())
    assert done == journal.Replayed(50, {"a": {"peers": [{"host": "10.0.0.1", "port": 1}]}}, 1)


def test_the_effective_generation_counts_the_journal_of_this_snapshot_only(tmp_path) -> None:
    path = tmp_path / "endpoints.json"
    write_snapshot(str(path), 42, {"a": {"peers": []}})
    assert snapshot_generation(str(path)) == 42
    j = journal.adopt(journal_path(str(path)), 42)
    assert j is not None
    j.append(doc(50, a=1))
    j.append(doc(51, a=2))
    assert snapshot_generation(str(path)) == 51
    with open(journal_path(str(path)), "ab") as fh:
        fh.write(frame(doc(60, a=3))[:-5])  # a crash mid-write
    assert snapshot_generation(str(path)) == 51
    # A newer snapshot, the old journal still there (the sidecar died in between): its
    # base is another snapshot's, so none of it counts.
    path.write_text(json.dumps({"generation": 55, "services": {}}))
    assert snapshot_generation(str(path)) == 55


def test_write_snapshot_starts_an_empty_journal(tmp_path) -> None:
    path = tmp_path / "endpoints.json"
    Path(journal_path(str(path))).write_bytes(header(1) + frame(doc(99, a=1)))
    assert write_snapshot(str(path), 42, {}) == ""
    assert Path(journal_path(str(path))).read_bytes() == header(42)
    assert snapshot_generation(str(path)) == 42


def test_a_push_is_a_journal_record_and_the_snapshot_stays(tmp_path) -> None:
    path, memo, texts = tmp_path / "endpoints.json", PlanMemo(), SnapshotTexts()
    plans = [_dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})]
    first = texts.record(str(path), 10, plans[0], endpoints(plans[0]), None)
    assert first.full, "the first write of a run is the whole snapshot"
    snap = path.stat()
    for gen, w in ((11, 2), (12, 3), (13, 4)):
        plans.append(_dynamic_plan(tmp_path, memo, {"a": w, "b": 1, "c": 1}))
        delta = changed_endpoints(plans[-2], plans[-1])
        assert list(delta) == ["a"]
        done = texts.record(str(path), gen, plans[-1], delta, plans[-2])
        assert not done.full
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (snap.st_ino, snap.st_mtime_ns)
    assert boot_endpoints(path) == (13, endpoints(plans[-1]))
    assert snapshot_generation(str(path)) == 13


def test_the_snapshot_is_rewritten_when_the_journal_outgrows_its_share(tmp_path) -> None:
    path, memo, texts = tmp_path / "endpoints.json", PlanMemo(), SnapshotTexts()
    last = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})
    texts.record(str(path), 10, last, endpoints(last), None)
    fulls = []
    for gen in range(11, 40):
        plan = _dynamic_plan(tmp_path, memo, {"a": gen, "b": 1, "c": 1})
        done = texts.record(str(path), gen, plan, changed_endpoints(last, plan), last)
        fulls.append(done.full)
        size = os.path.getsize(journal_path(str(path)))
        assert size * JOURNAL_SHARE <= path.stat().st_size, gen
        assert boot_endpoints(path) == (gen, endpoints(plan))
        last = plan
    assert any(fulls) and not all(fulls), fulls
    assert Path(journal_path(str(path))).read_bytes().startswith(header(0)[:-2])


def test_a_delta_from_another_plan_than_the_one_on_disk_rewrites_the_snapshot(tmp_path) -> None:
    """A reload that wrote the snapshot of a config that then did not serve: the next
    push's delta starts from the plan that serves, not from what is on disk."""
    path, memo, texts = tmp_path / "endpoints.json", PlanMemo(), SnapshotTexts()
    serving = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})
    texts.write(str(path), 10, _dynamic_plan(tmp_path, memo, {"a": 1, "b": 9, "c": 1}))
    plan = _dynamic_plan(tmp_path, memo, {"a": 2, "b": 1, "c": 1})
    done = texts.record(str(path), 11, plan, changed_endpoints(serving, plan), serving)
    assert done.full
    assert boot_endpoints(path) == (11, endpoints(plan))


def test_after_a_failed_append_the_next_push_rewrites_the_snapshot(tmp_path, monkeypatch) -> None:
    path, memo, texts = tmp_path / "endpoints.json", PlanMemo(), SnapshotTexts()
    last = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})
    texts.record(str(path), 10, last, endpoints(last), None)
    plan = _dynamic_plan(tmp_path, memo, {"a": 2, "b": 1, "c": 1})
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal.os, "write", half_then_full)
    with pytest.raises(InstallError, match="no space left on device"):
        texts.record(str(path), 11, plan, changed_endpoints(last, plan), last)
    monkeypatch.undo()
    assert Path(journal_path(str(path))).read_bytes() == header(10), "the torn record cut off"
    again = _dynamic_plan(tmp_path, memo, {"a": 3, "b": 1, "c": 1})
    done = texts.record(str(path), 12, again, changed_endpoints(plan, again), plan)
    assert done.full
    assert boot_endpoints(path) == (12, endpoints(again))


def test_a_journal_that_cannot_be_started_leaves_the_snapshot_serving(tmp_path) -> None:
    path = tmp_path / "endpoints.json"
    os.mkdir(journal_path(str(path)))  # in the way
    memo, texts = PlanMemo(), SnapshotTexts()
    last = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})
    done = texts.record(str(path), 10, last, endpoints(last), None)
    assert done.full and "is a directory" in done.note
    plan = _dynamic_plan(tmp_path, memo, {"a": 2, "b": 1, "c": 1})
    assert texts.record(str(path), 11, plan, changed_endpoints(last, plan), last).full
    assert snapshot_generation(str(path)) == 11


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(1, 9)), max_size=25))
def test_snapshot_and_journal_always_replay_to_the_last_plan(
    tmp_path_factory: pytest.TempPathFactory, steps: list[dict[str, int]]
) -> None:
    tmp = tmp_path_factory.mktemp("replay")
    path, memo, texts = tmp / "endpoints.json", PlanMemo(), SnapshotTexts()
    last = _dynamic_plan(tmp, memo, {"a": 1, "b": 1, "c": 1})
    texts.record(str(path), 1, last, endpoints(last), None)
    for gen, weights in enumerate(steps, start=2):
        plan = _dynamic_plan(tmp, memo, {"a": 1, "b": 1, "c": 1, **weights})
        texts.record(str(path), gen, plan, changed_endpoints(last, plan), last)
        assert boot_endpoints(path) == (gen, endpoints(plan))
        assert snapshot_generation(str(path)) == gen
        last = plan


def _pushes(tmp_path: Path) -> tuple[Path, SnapshotTexts, list[Any], PlanMemo]:
    """A snapshot written at generation 10 by this run, and the plan it holds."""
    path, memo, texts = tmp_path / "endpoints.json", PlanMemo(), SnapshotTexts()
    first = _dynamic_plan(tmp_path, memo, {"a": 1, "b": 1, "c": 1})
    assert texts.record(str(path), 10, first, endpoints(first), None).full
    return path, texts, [first], memo


def _push(tmp_path: Path, texts: SnapshotTexts, plans: list[Any], memo: PlanMemo, gen: int):
    plan = _dynamic_plan(tmp_path, memo, {"a": gen, "b": 1, "c": 1})
    done = texts.record(
        str(tmp_path / "endpoints.json"), gen, plan, changed_endpoints(plans[-1], plan), plans[-1]
    )
    plans.append(plan)
    return done


def test_a_snapshot_another_writer_rewrote_is_rewritten_not_appended_to(tmp_path) -> None:
    """`render -o` or a second watcher wrote generation 150 and its journal: our delta
    on their base would replay to a mix; the whole snapshot is written instead."""
    path, texts, plans, memo = _pushes(tmp_path)
    assert not _push(tmp_path, texts, plans, memo, 11).full
    write_snapshot(str(path), 150, {"a": {"peers": []}})
    done = _push(tmp_path, texts, plans, memo, 200)
    assert done.full
    assert boot_endpoints(path) == (200, endpoints(plans[-1]))
    assert not _push(tmp_path, texts, plans, memo, 201).full, "ours again: a record"
    assert boot_endpoints(path) == (201, endpoints(plans[-1]))


def test_a_journal_another_writer_replaced_or_appended_to_is_left_alone(tmp_path) -> None:
    path, texts, plans, memo = _pushes(tmp_path)
    jpath = Path(journal_path(str(path)))
    theirs = header(10) + frame(doc(99, a=7))
    for foreign in (lambda: jpath.write_bytes(theirs), lambda: jpath.open("ab").write(b"x")):
        foreign()
        before = jpath.read_bytes()
        gen = plans and 20 + len(plans)
        done = _push(tmp_path, texts, plans, memo, gen)
        assert done.full, "not appended to theirs"
        assert boot_endpoints(path) == (gen, endpoints(plans[-1]))
        assert before != jpath.read_bytes() == header(gen)


def test_a_foreign_journal_is_not_touched_by_an_append(tmp_path) -> None:
    """Journal.append checks under its flock that the file is the one it left: a failed
    append is cut back to its own end only, never into another writer's record."""
    path = tmp_path / "endpoints.json"
    write_snapshot(str(path), 42, {})
    mine = journal.adopt(journal_path(str(path)), 42)
    assert mine is not None
    with open(journal_path(str(path)), "ab") as fh:
        fh.write(frame(doc(50, a=1)))  # another writer's record
    with pytest.raises(journal.Foreign, match="appended to by another writer"):
        mine.append(doc(51, a=2))
    assert snapshot_generation(str(path)) == 50, "their record stands"


def test_the_journal_gets_the_snapshots_mode(tmp_path) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text("{}")
    path.chmod(0o640)
    write_snapshot(str(path), 42, {})
    assert Path(journal_path(str(path))).stat().st_mode & 0o777 == 0o640


def test_a_plan_that_moved_no_endpoint_keeps_the_journal_in_use(tmp_path) -> None:
    """A tag-only change: the plan that serves is a new object with the same endpoints;
    `advance` says so, and the next push is a record, not a 7.9 MB rewrite."""
    path, texts, plans, memo = _pushes(tmp_path)
    same = _dynamic_plan(tmp_path, PlanMemo(), {"a": 1, "b": 1, "c": 1})
    assert same is not plans[-1] and changed_endpoints(plans[-1], same) == {}
    texts.advance(plans[-1], same)
    plans.append(same)
    assert not _push(tmp_path, texts, plans, memo, 11).full
    texts.advance(plans[0], plans[-1])  # not what is on disk: nothing moves
    stale = _dynamic_plan(tmp_path, PlanMemo(), {"a": 11, "b": 1, "c": 1})
    assert texts.record(str(path), 12, stale, {}, plans[0]).full
    assert boot_endpoints(path) == (12, endpoints(stale))


def test_a_first_pass_adopts_the_snapshot_and_journal_it_found(tmp_path) -> None:
    path, texts, plans, memo = _pushes(tmp_path)
    assert not _push(tmp_path, texts, plans, memo, 11).full
    fresh = SnapshotTexts()  # a new run
    assert not fresh.adopt(str(path), 10, plans[-1]), "the journal's generation is 11"
    assert fresh.adopt(str(path), 11, plans[-1])
    assert not _push(tmp_path, fresh, plans, memo, 12).full
    assert boot_endpoints(path) == (12, endpoints(plans[-1]))
    with open(journal_path(str(path)), "ab") as fh:
        fh.write(frame(doc(13, a=1))[:-4])  # torn: a record after it would be ignored
    assert not SnapshotTexts().adopt(str(path), 12, plans[-1])


def test_a_failed_compaction_appends_the_record_and_tries_again_later(
    tmp_path, monkeypatch
) -> None:
    """Disk full for the rewrite: the old snapshot and journal are intact and a record
    fits, so it is appended; the rewrite is tried again COMPACT_RETRY records later."""
    from nginxgen.deploy import feed

    path, texts, plans, memo = _pushes(tmp_path)
    real = feed.write_atomic
    full = {"on": False, "tries": 0}

    def no_room(target: Any, content: Any, **kw: Any) -> Any:
        if full["on"] and str(target) == str(path):
            full["tries"] += 1
            raise InstallError(f"cannot write {target}: no space left on device", 28)
        return real(target, content, **kw)

    monkeypatch.setattr(feed, "write_atomic", no_room)
    full["on"] = True
    gen = 11
    while True:  # records until the journal is full enough for a compaction
        done = _push(tmp_path, texts, plans, memo, gen + 1)
        gen += 1
        assert not done.full
        if full["tries"]:
            break
    assert "not compacted" in done.note and "no space left" in done.note
    gen -= 1
    assert boot_endpoints(path) == (gen + 1, endpoints(plans[-1]))
    for i in range(feed.COMPACT_RETRY):
        assert not _push(tmp_path, texts, plans, memo, gen + 2 + i).full
    assert full["tries"] == 1, "not retried on every push"
    full["on"] = False
    assert _push(tmp_path, texts, plans, memo, gen + 2 + feed.COMPACT_RETRY).full
    assert boot_endpoints(path) == (gen + 2 + feed.COMPACT_RETRY, endpoints(plans[-1]))
