"""What lint reads and how deep it goes: include loops, devices, FIFOs and huge files are
findings, deep nesting is walked like flat config, the payload is crossplane's."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from nginxgen.lint import Options, lint_file
from nginxgen.lint.parse import MAX_FILE_BYTES, parse_config
from nginxgen.lint.tree import Walk
from nginxgen.verify.parse import parse_file
from tests.helpers import REPO

CORPUS = REPO / "tests" / "lint_corpus"
MEMORY_CAP = 2 * 1024**3  # a lint that reads without end fails here, not on the machine


def lint_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "lint", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin:/usr/sbin"},
        timeout=120,
        preexec_fn=cap_memory,
    )


def findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    report = json.loads(result.stdout)
    return [{k: f[k] for k in ("rule", "file", "line", "message")} for f in report["findings"]]


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).write_text(text)


# --- include loops -------------------------------------------------------------------------


def test_an_include_loop_is_a_finding_with_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "nginx.conf": "events {}\nhttp {\n  include a.conf;\n}\n",
            "a.conf": "# a\ninclude b.conf;\n",
            "b.conf": "server_tokens off;\ninclude a.conf;\n",
            "self.conf": "events {}\ninclude self.conf;\n",
        },
    )
    for security in ("--no-security", "--security"):
        result = lint_cli(security, "--format", "json", "nginx.conf", cwd=tmp_path)
        assert result.returncode == 1, result.stderr[-2000:]
        assert findings(result) == [
            {
                "rule": "NGX000",
                "file": "b.conf",
                "line": 2,
                "message": "include loop: a.conf -> b.conf -> a.conf; "
                "nginx would include these files until it crashes",
            }
        ]
    result = lint_cli("--no-security", "--format", "json", "self.conf", cwd=tmp_path)
    assert [(f["file"], f["line"]) for f in findings(result)] == [("self.conf", 2)]
    assert "self.conf -> self.conf" in str(findings(result)[0]["message"])


def test_a_file_included_twice_is_no_loop(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "nginx.conf": "events {}\nhttp {\n  include t.conf;\n  include t.conf;\n}\n",
            "t.conf": "proxy_read_timeout 5s;\n",
        },
    )
    result, _ = lint_file(str(tmp_path / "nginx.conf"), Options())
    assert result.findings == ()


def test_includes_that_multiply_stop_with_a_finding(tmp_path: Path) -> None:
    # Each file includes the next one twice: 2**30 directives to walk, from 31 files.
    write(
        tmp_path,
        {f"f{i}.conf": f"include f{i + 1}.conf;\ninclude f{i + 1}.conf;\n" for i in range(30)},
    )
    write(tmp_path, {"f30.conf": "server_tokens off;\n", "nginx.conf": "include f0.conf;\n"})
    walk = Walk(parse_config(str(tmp_path / "nginx.conf"), comments=True), max_walked=10_000)
    walk.run()
    assert [(h.rule, h.message) for h in walk.hits] == [
        (
            "NGX000",
            "includes repeat the same files so often that this config expands past "
            "10,000 directives; the rest is not checked",
        )
    ]


# --- what is read ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "huge"])
def test_an_include_that_is_no_small_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "inc.conf"
    if kind == "device":
        target = Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)  # opening it would block until a writer comes
    elif kind == "directory":
        target.mkdir()
    else:
        with open(target, "wb") as fh:  # sparse: no disk space used
            fh.truncate(MAX_FILE_BYTES + 1)
    write(tmp_path, {"nginx.conf": f"events {{}}\nhttp {{\n  include {target};\n}}\n"})
    result = lint_cli("--no-security", "--format", "json", "nginx.conf", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    what = {
        "device": "is a character device, not a regular file; not read",
        "fifo": "is a FIFO, not a regular file; not read",
        "directory": "is a directory, not a regular file; not read",
        "huge": "more than the 64 MiB lint reads from one file; not read",
    }[kind]
    [finding] = findings(result)
    assert (finding["rule"], finding["file"], finding["line"]) == ("NGX000", "nginx.conf", 3)
    assert str(finding["message"]).startswith(str(target)) and what in str(finding["message"])


def test_nginx_test_and_gixy_do_not_run_on_a_refused_include(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.conf")
    write(tmp_path, {"nginx.conf": "events {}\nhttp {\n  include fifo.conf;\n}\n"})
    result = lint_cli("--security", "--nginx-test", "--format", "json", "nginx.conf", cwd=tmp_path)
    assert [f["rule"] for f in findings(result)] == ["NGX019", "NGX000"]
    assert "nginx -t not run" in str(findings(result)[0]["message"])


# --- depth -------------------------------------------------------------------------------


def test_deep_nesting_is_walked_to_the_bottom(tmp_path: Path) -> None:
    depth = 40_000
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n  server {\n    listen 127.0.0.1:8080;\n"
        + "location / {\n" * depth
        + "proxy_pass http://nowhere.example;\n"  # NGX003 and NGX010, at the very bottom
        + "}\n" * depth
        + "  }\n}\n"
    )
    result, _ = lint_file(str(conf), Options())
    line = 5 + depth
    assert {(f.rule, f.line) for f in result.findings} == {("NGX003", line), ("NGX010", line)}


def test_a_long_include_chain_is_followed(tmp_path: Path) -> None:
    n = 3_000
    write(tmp_path, {f"c{i}.conf": f"include c{i + 1}.conf;\n" for i in range(n)})
    write(tmp_path, {f"c{n}.conf": "no_such_directive;\n", "nginx.conf": "include c0.conf;\n"})
    result, _ = lint_file(str(tmp_path / "nginx.conf"), Options())
    assert [(f.rule, f.file) for f in result.findings] == [("NGX018", str(tmp_path / f"c{n}.conf"))]


# --- the payload ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", sorted(CORPUS.rglob("*.conf")), ids=lambda p: str(p.relative_to(CORPUS))
)
def test_the_payload_is_crossplanes(path: Path) -> None:
    for kw in ({"comments": True}, {"comments": True, "check_ctx": False}, {}):
        ours = parse_config(str(path), **kw)  # type: ignore[arg-type]
        assert ours.pop("refused") == []
        assert ours == parse_file(str(path), **kw)  # type: ignore[arg-type]
