"""`nginxgen shift` against a file registry: what it writes, and its one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import write_spec
from tests.helpers.gateway import run_cli

SPLIT = {"carts": {"split": {"weights": {"blue": 90, "green": 10}}}}


def setup(tmp_path: Path) -> Path:
    return write_spec(
        tmp_path,
        {
            "nginx": {"output": "nginx.conf"},
            "routes": [{"path": "/carts/", "service": "carts"}],
            "services": SPLIT,
        },
        {
            "carts": [
                {"id": "b", "address": "127.0.0.1:9001", "meta": {"version": "blue"}},
                {"id": "g", "address": "127.0.0.1:9002", "tags": ["version=green"]},
            ]
        },
    )


def test_shift_writes_beside_the_file_registry_and_show_reads_it(tmp_path: Path) -> None:
    spec = setup(tmp_path)
    r = run_cli("shift", "-c", str(spec), "carts", "green=25")
    assert r.returncode == 0, r.stderr
    assert "carts: blue=75 green=25 written to file" in r.stdout
    written = json.loads((tmp_path / "services.yaml.split.json").read_text())
    assert written["carts"]["weights"] == {"blue": 75, "green": 25}
    shown = run_cli("shift", "-c", str(spec), "--show")
    assert "carts: blue=75 green=25 (from registry override" in shown.stdout
    assert run_cli("shift", "-c", str(spec), "carts", "--to", "blue").returncode == 0
    flipped = json.loads((tmp_path / "services.yaml.split.json").read_text())
    assert flipped["carts"]["weights"] == {"blue": 100, "green": 0}
    assert run_cli("shift", "-c", str(spec), "carts", "--clear").returncode == 0
    shown = run_cli("shift", "-c", str(spec), "--show")
    assert "carts: blue=90 green=10 (from spec" in shown.stdout


def test_show_without_any_split_says_so(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        {"nginx": {"output": "nginx.conf"}, "routes": [{"path": "/a/", "service": "a"}]},
        {"a": [{"id": "a1", "address": "127.0.0.1:9001"}]},
    )
    for args in (["--show"], []):
        r = run_cli("shift", "-c", str(spec), *args)
        assert r.returncode == 0 and r.stdout == ""
        assert r.stderr.strip() == (
            f"no split routes in {spec} (a split is set under services.NAME.split; "
            "see docs/split.md)"
        )


def test_bad_shifts_are_one_sentence_and_exit_2(tmp_path: Path) -> None:
    spec = setup(tmp_path)
    cases = [
        (["carts", "red=10"], "version 'red' is not in the spec's split (known: blue, green)"),
        (["carts", "green=150"], "add up to 150, more than 100"),
        (["carts", "green"], "write VERSION=SHARE"),
        (["carts", "green=10.001"], "two decimals"),
        (["nope", "green=10"], "service 'nope' has no split"),
        (["carts", "--to", "green", "blue=1"], "not both"),
    ]
    for args, words in cases:
        r = run_cli("shift", "-c", str(spec), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "services.yaml.split.json").exists()


def test_a_hand_written_bad_override_keeps_the_spec_weights(tmp_path: Path) -> None:
    spec = setup(tmp_path)
    (tmp_path / "services.yaml.split.json").write_text('{"carts": {"weights": {"red": 100}}}')
    r = run_cli("render", "-c", str(spec), "--no-nginx-test")
    assert r.returncode == 0, r.stderr
    assert "version 'red' is not in the spec's split" in r.stderr
    assert "the spec's weights stay in force" in r.stderr
    assert "split blue=90 green=10 (spec)" in r.stderr


def test_a_rendered_split_config_keeps_the_generator_invariants(tmp_path: Path) -> None:
    spec = setup(tmp_path)
    conf = tmp_path / "nginx.conf"
    r = run_cli("render", "-c", str(spec), "-o", str(conf), "--no-nginx-test")
    assert r.returncode == 0, r.stderr
    linted = run_cli("lint", str(conf))
    assert "NGX016" not in linted.stdout + linted.stderr, linted.stdout
