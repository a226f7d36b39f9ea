"""Each report format carries what its consumer needs (GitHub code scanning, Actions, JUnit)."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nginxgen.lint import RULES, FileResult, Finding, Options, lint_paths
from nginxgen.lint.engine import Outcome
from nginxgen.lint.reporters import (
    artifact_uri,
    github_data,
    github_property,
    to_github,
    to_json,
    to_junit,
    to_sarif,
    write,
)
from tests.helpers import REPO

CORPUS = REPO / "tests" / "lint_corpus"
DUP = CORPUS / "bad" / "NGX007-upstream-duplicate-server.conf"
TRIES = CORPUS / "bad" / "NGX005-next-upstream-unlimited-tries.conf"
CLEAN = CORPUS / "good" / "hand_written.conf"


@pytest.fixture
def outcome(monkeypatch: pytest.MonkeyPatch) -> Outcome:
    monkeypatch.chdir(REPO)  # SARIF URIs are relative to the checkout root
    rel = [str(p.relative_to(REPO)) for p in (DUP, TRIES, CLEAN)]
    return lint_paths(rel, Options(), jobs=1)


def test_sarif_has_what_github_code_scanning_requires(outcome: Outcome) -> None:
    log = json.loads(to_sarif(outcome))
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "nginxgen"
    ids = [r["id"] for r in driver["rules"]]
    assert set(RULES) <= set(ids)
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    results = run["results"]
    assert {(r["ruleId"], r["level"]) for r in results} == {
        ("NGX007", "error"),
        ("NGX005", "warning"),
    }
    for r in results:
        assert ids[r["ruleIndex"]] == r["ruleId"]
        assert r["message"]["text"]
        (loc,) = r["locations"]
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.startswith("tests/lint_corpus/bad/NGX00")  # repo-relative, forward slashes
        assert isinstance(loc["physicalLocation"]["region"]["startLine"], int)
        assert loc["physicalLocation"]["region"]["startLine"] >= 1


def test_sarif_uri_outside_the_checkout_is_an_absolute_file_uri(tmp_path: Path) -> None:
    inside = tmp_path / "repo" / "conf" / "nginx.conf"
    assert artifact_uri(str(inside), str(tmp_path / "repo")) == "conf/nginx.conf"
    assert artifact_uri("/etc/nginx/nginx.conf", str(tmp_path)) == "file:///etc/nginx/nginx.conf"


def test_sarif_uses_github_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    assert artifact_uri(str(tmp_path / "gw" / "nginx.conf")) == "gw/nginx.conf"


def test_github_commands_are_escaped() -> None:
    assert github_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert github_property("a,b:c%") == "a%2Cb%3Ac%25"
    finding = Finding("NGX010", "warning", "line1\nline2 50%", "conf/a,b:c.conf", 7)
    out = to_github(Outcome((FileResult("conf/a,b:c.conf", (finding,), ()),)))
    assert out == (
        "::warning file=conf/a%2Cb%3Ac.conf,line=7,title=NGX010 proxy-timeouts-missing"
        "::line1%0Aline2 50%25\n"
    )


def test_github_severity_commands(outcome: Outcome) -> None:
    lines = to_github(outcome).splitlines()
    assert any(line.startswith("::error file=tests/lint_corpus/bad/NGX007") for line in lines)
    assert any(line.startswith("::warning file=tests/lint_corpus/bad/NGX005") for line in lines)
    assert all(",line=" in line and ",title=NGX" in line for line in lines)


def test_junit_has_one_testcase_per_finding_and_one_per_clean_file(outcome: Outcome) -> None:
    root = ET.fromstring(to_junit(outcome, strict=False))
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 3  # NGX007, NGX005, and the clean file
    by_name = {c.get("name", "").split()[0]: c for c in cases}
    assert by_name["NGX007"].find("failure") is not None
    assert by_name["NGX007"].find("failure").get("type") == "NGX007"  # type: ignore[union-attr]
    assert by_name["NGX005"].find("failure") is None  # a warning does not fail the gate...
    assert by_name["clean"].get("classname", "").endswith("hand_written.conf")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    strict = ET.fromstring(to_junit(outcome, strict=True))
    assert strict.get("failures") == "2"  # ...unless --strict


def test_json_report(outcome: Outcome) -> None:
    report = json.loads(to_json(outcome, strict=False))
    assert report["ok"] is False
    assert report["summary"] == {"files": 3, "errors": 1, "warnings": 1, "notes": 0}
    rules = {(f["rule"], f["name"], f["line"]) for f in report["findings"]}
    assert rules == {
        ("NGX007", "upstream-duplicate-server", 11),
        ("NGX005", "next-upstream-unlimited-tries", 16),
    }
    assert all(f["source"] for f in report["findings"])


def test_text_has_no_colour_unless_asked(outcome: Outcome) -> None:
    plain, coloured = io.StringIO(), io.StringIO()
    write("text", outcome, plain, strict=False, color=False)
    write("text", outcome, coloured, strict=False, color=True)
    assert "\x1b[" not in plain.getvalue()
    assert "\x1b[" in coloured.getvalue()
    assert "NGX007" in plain.getvalue()


@pytest.mark.requires("gixy")
def test_gixy_findings_are_merged_into_every_format(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n    server {\n        listen 127.0.0.1:8080;\n"
        "        location / {\n            proxy_connect_timeout 1s; proxy_read_timeout 1s;"
        " proxy_send_timeout 1s;\n"
        "            proxy_set_header Host $http_host;\n"
        "            proxy_pass http://10.0.0.1;\n        }\n    }\n}\n"
    )
    outcome = lint_paths([str(conf)], Options(security=True))
    rules = {f.rule: f for f in outcome.results[0].findings}
    assert "gixy/host_spoofing" in rules, rules
    assert rules["gixy/host_spoofing"].line == 7
    sarif = json.loads(to_sarif(outcome, base=str(tmp_path)))
    driver_ids = [r["id"] for r in sarif["runs"][0]["tool"]["driver"]["rules"]]
    assert "gixy/host_spoofing" in driver_ids
    # Without --security the same file has none of them.
    plain = lint_paths([str(conf)], Options(security=False))
    assert not any(f.rule.startswith("gixy/") for f in plain.results[0].findings)


def test_reports_go_to_output_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "lint.sarif"
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "lint", "--no-security", "-f", "sarif"]
        + ["-o", str(out), str(DUP)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert json.loads(out.read_text())["runs"][0]["results"][0]["ruleId"] == "NGX007"
