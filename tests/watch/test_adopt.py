"""watch/adopt.py: when the installed config differs from a new render only in endpoints,
and what a first pass pushes against the boot snapshot."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nginxgen.deploy.feed import write_snapshot
from nginxgen.deploy.journal import adopt, frame, header, journal_path
from nginxgen.model.catalog import Catalog, Instance
from nginxgen.pipeline import Build, BuildCache, build
from nginxgen.plan.endpoints import endpoints
from nginxgen.spec import Spec
from nginxgen.watch.adopt import Served, read_served, same_but_endpoints, served_delta

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def spec(tmp: Path, routes: tuple[str, ...] = ("a", "b"), **services: Any) -> Spec:
    return Spec.model_validate(
        {
            "registry": {"kind": "file", "path": "/dev/null"},
            "nginx": {"output": str(tmp / "nginx.conf"), "endpoints": "dynamic"},
            "services": services,
            "routes": [{"path": f"/{r}/", "service": r} for r in routes],
        },
        context={"base_dir": str(tmp)},
    )


def render(s: Spec, *a: Instance, b: tuple[Instance, ...] = ()) -> Build:
    b = b or (Instance("b1", "b", "10.0.0.9", 80),)
    result = build(s, Catalog({"a": a, "b": b}), binary=None, cache=BuildCache(), now=NOW)
    assert result.verdict.ok, result.verdict.findings
    return result


A1, A2 = Instance("a1", "a", "10.0.0.1", 80), Instance("a2", "a", "10.0.0.2", 80, 3)


def test_other_endpoints_only_is_the_same_config(tmp_path) -> None:
    s = spec(tmp_path)
    old, new = render(s, A1), render(s, A1, A2)
    assert old.text != new.text
    assert same_but_endpoints(old.text, new.text, new.plan)
    assert same_but_endpoints(new.text, new.text, new.plan)
    # Many services: the plan document comes in several pieces; still only endpoints.
    many = tuple(Instance(f"a{i}", "a", f"10.0.1.{i}", 8000 + i) for i in range(1, 60))
    assert same_but_endpoints(old.text, render(s, *many).text, render(s, *many).plan)


def test_anything_a_reload_changes_is_not(tmp_path) -> None:
    old = render(spec(tmp_path), A1)
    # Another route, another balancing method (only the plan document says it), another
    # keepalive: each needs the reload.
    for other in (
        spec(tmp_path, routes=("a", "b", "c")),
        spec(tmp_path, a={"balance": "least_conn"}),
        spec(tmp_path, a={"keepalive": 7}),
    ):
        new = render(other, A1, A2)
        assert not same_but_endpoints(old.text, new.text, new.plan)
    new = render(spec(tmp_path), A1, A2)
    assert not same_but_endpoints(
        old.text.replace("server_tokens", "#server_tokens"), new.text, new.plan
    )
    assert not same_but_endpoints("", new.text, new.plan)
    assert not same_but_endpoints(old.text[: len(old.text) // 2], new.text, new.plan)


def test_the_delta_is_against_the_snapshot_it_can_trust(tmp_path) -> None:
    s = spec(tmp_path)
    plan = render(s, A1, A2).plan
    path = tmp_path / "snap.json"
    assert read_served(str(path)) is None
    write_snapshot(str(path), 41, endpoints(render(s, A1).plan))
    served = read_served(str(path))
    assert served is not None and served.generation == 41
    assert list(served_delta(plan, served, 41)) == ["a"]  # b serves as planned
    assert served_delta(render(s, A1).plan, served, 41) == {}
    # The feed holds another generation (a push since, a reload that did not serve), or
    # nothing says: every service.
    assert list(served_delta(plan, served, 42)) == ["a", "b"]
    assert list(served_delta(plan, served, None)) == ["a", "b"]
    assert list(served_delta(plan, None, None)) == ["a", "b"]
    path.write_text("{not json")
    assert read_served(str(path)) is None
    path.write_text(json.dumps({"generation": "41", "services": {}}))
    assert read_served(str(path)) is None
    assert served_delta(plan, Served(1, {}), 1).keys() == {"a", "b"}


def test_what_nginx_serves_is_the_snapshot_with_its_journal(tmp_path) -> None:
    """The records of the snapshot's journal apply over it, up to the first one nginx
    would refuse (deploy/journal.replay): the generation and endpoints nginx loads."""
    s = spec(tmp_path)
    path = tmp_path / "snap.json"
    write_snapshot(str(path), 41, endpoints(render(s, A1).plan))
    moved = endpoints(render(s, A1, A2).plan)
    j = adopt(journal_path(str(path)), 41)
    assert j is not None
    j.append(json.dumps({"generation": 45, "services": {"a": moved["a"]}}).encode())
    served = read_served(str(path))
    assert served is not None and served.generation == 45
    plan = render(s, A1, A2).plan
    assert served_delta(plan, served, 45) == {}, "the journal's record serves a already"
    assert list(served_delta(render(s, A1).plan, served, 45)) == ["a"]
    # A record that does not continue (not above the one before) ends the replay there.
    with open(journal_path(str(path)), "ab") as fh:
        fh.write(frame(b'{"generation": 44, "services": {}}'))
        fh.write(frame(json.dumps({"generation": 50, "services": {"b": None}}).encode()))
    assert read_served(str(path)) == served
    # A journal of another snapshot (the sidecar died between the two writes) is ignored.
    (tmp_path / "snap.json.journal").write_bytes(header(40) + frame(b'{"generation": 99}'))
    again = read_served(str(path))
    assert again is not None and again.generation == 41
