"""`nginxgen lint`: the corpus, suppressions, includes, project config, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nginxgen.lint import RULES, Options, lint_file, lint_paths
from nginxgen.lint.config import load_project_config
from nginxgen.lint.external import gixy_available
from tests.helpers import REPO

CORPUS = REPO / "tests" / "lint_corpus"
BAD = sorted((CORPUS / "bad").glob("*.conf"))
GOOD = sorted((CORPUS / "good").glob("*.conf"))
_EXPECT = re.compile(r"(?:#|--) expect: ([A-Z0-9 ]+)$")
_EXPECT_NEXT = re.compile(r"# expect-next-line: ([A-Z0-9 ]+)$")


def expected(path: Path) -> set[tuple[str, str, int]]:
    """(file, rule, line) from the `# expect: RULE` markers of a file and its includes."""
    out: set[tuple[str, str, int]] = set()
    files = [path] + sorted((path.parent / "inc").glob("*.conf")) * (path.name == "includes.conf")
    for file in files:
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            if m := _EXPECT.search(line):
                out |= {(str(file), rule, number) for rule in m.group(1).split()}
            if m := _EXPECT_NEXT.search(line.strip()):
                out |= {(str(file), rule, number + 1) for rule in m.group(1).split()}
    return out


def found(path: Path, options: Options | None = None) -> set[tuple[str, str, int]]:
    result, _ = lint_file(str(path), options or Options())
    return {(f.file, f.rule, f.line or 0) for f in result.findings}


def lint_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "lint", "--no-security", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin:/usr/sbin"},
        timeout=120,
    )


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_file_gives_exactly_the_expected_findings(path: Path) -> None:
    want = expected(path)
    assert want, f"{path.name} has no '# expect:' marker"
    assert found(path) == want


def test_every_rule_has_a_bad_file_or_a_dedicated_test() -> None:
    covered = {p.name.split("-")[0] for p in BAD}
    dedicated = {"NGX019"}  # nginx -t: tests/integration/test_lint_nginx.py
    assert set(RULES) - covered - dedicated == set()


@pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
def test_good_file_has_no_findings(path: Path) -> None:
    assert found(path) == set()


def test_rendered_example_config_is_clean(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    rendered = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "--no-nginx-test"]
        + ["-c", str(REPO / "examples" / "nginxgen.yaml"), "-o", str(conf)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "# nginxgen: spec=" in conf.read_text()  # so the round-trip rule runs on it
    assert found(conf) == set()
    if gixy_available():  # gixy-next has nothing to say about it either
        assert found(conf, Options(security=True)) == set()
    result = lint_cli("--strict", str(conf))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


# --- suppression ----------------------------------------------------------------------

_CONF = """events {}
http {
    upstream app { server 10.0.0.1:80; }
    server {
        listen 127.0.0.1:8080;
        location / {
            %s
            proxy_pass http://app;
        }
    }
}
"""


def write(tmp_path: Path, text: str, name: str = "nginx.conf") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_inline_suppression_with_reason_silences_only_that_rule(tmp_path: Path) -> None:
    path = write(tmp_path, _CONF % "# nginxgen: disable=NGX010 timeouts come from the L7 LB")
    assert found(path) == set()
    path = write(tmp_path, _CONF % "# nginxgen: disable=NGX011 wrong rule for this")
    assert {rule for _, rule, _ in found(path)} == {"NGX010"}


def test_suppression_without_reason_still_applies_but_is_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, _CONF % "# nginxgen: disable=NGX010")
    assert found(path) == {(str(path), "NGX017", 7)}


def test_suppression_by_rule_name_and_at_block_start(tmp_path: Path) -> None:
    text = _CONF.replace(
        "    server {\n", "    server { # nginxgen: disable=proxy-timeouts-missing legacy vhost\n"
    )
    path = write(tmp_path, text % "")
    assert found(path) == set()


def test_suppression_on_the_line_above_covers_only_the_next_directive(tmp_path: Path) -> None:
    text = """events {}
http {
    server {
        listen 127.0.0.1:8080;
        proxy_next_upstream_tries 3;
        location /a/ {
            proxy_next_upstream_tries 2;
            # nginxgen: disable=NGX010 fixed by the upstream's own deadline
            proxy_pass http://10.0.0.1;
        }
        location /b/ {
            proxy_pass http://10.0.0.2;
        }
    }
}
"""
    path = write(tmp_path, text)
    assert found(path) == {(str(path), "NGX010", 12)}


def test_disable_option_and_project_config(tmp_path: Path) -> None:
    conf = write(tmp_path, _CONF % "", "legacy/site.conf")
    other = write(tmp_path, _CONF % "", "new/site.conf")
    assert lint_cli("--strict", str(conf)).returncode == 1
    assert lint_cli("--strict", "--disable", "NGX010", str(conf)).returncode == 0
    assert lint_cli("--strict", "--disable", "proxy-timeouts-missing", str(conf)).returncode == 0

    (tmp_path / ".git").mkdir()  # the search for .nginxgen-lint.yaml stops at the repo root
    (tmp_path / ".nginxgen-lint.yaml").write_text(
        "ignore:\n"
        "  - paths: ['legacy/*.conf']\n"
        "    rules: [NGX010]\n"
        "    reason: the legacy site keeps nginx's default timeouts until it is retired\n"
    )
    assert lint_cli("--strict", "legacy/site.conf", cwd=tmp_path).returncode == 0
    assert lint_cli("--strict", "new/site.conf", cwd=tmp_path).returncode == 1
    assert other.exists()


def test_project_config_ignore_without_reason_is_a_warning(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "disable: [NGX005]\nignore:\n  - paths: ['*.conf']\n  - paths: x.conf\n    rules: [NOPE]\n",
        ".nginxgen-lint.yaml",
    )
    project = load_project_config(cfg)
    assert project.disable == {"NGX005"}
    assert [(f.rule, f.line, f.message) for f in project.problems] == [
        ("NGX017", 3, "ignore entry without a reason"),
        ("NGX017", 4, "ignore entry without a reason"),
        ("NGX017", 4, "unknown rule 'NOPE' in 'rules'"),
    ]


def test_bad_project_config_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "ignore: {oops: 1}\n", ".nginxgen-lint.yaml")
    conf = write(tmp_path, _CONF % "")
    result = lint_cli("--lint-config", str(tmp_path / ".nginxgen-lint.yaml"), str(conf))
    assert result.returncode == 2
    assert ".nginxgen-lint.yaml" in result.stderr and "Traceback" not in result.stderr


# --- includes -------------------------------------------------------------------------


def test_includes_with_globs_resolve_against_the_main_files_directory(tmp_path: Path) -> None:
    write(tmp_path, "upstream a { server 10.0.0.1:80; }\n", "conf.d/a.conf")
    write(tmp_path, "upstream b { }\n", "conf.d/b.conf")
    # Included from a subdirectory, the path is still relative to nginx.conf's directory.
    write(tmp_path, "include conf.d/a.conf;\n", "sites/inner.inc")
    main = write(
        tmp_path,
        """events {}
http {
    include sites/*.inc;
    include conf.d/b.conf;
    server {
        listen 127.0.0.1:8080;
        location / {
            proxy_connect_timeout 1s; proxy_read_timeout 1s; proxy_send_timeout 1s;
            proxy_pass http://a;
        }
    }
}
""",
    )
    result, _ = lint_file(str(main), Options())
    assert [(f.rule, f.file, f.line) for f in result.findings] == [
        ("NGX001", str(tmp_path / "conf.d/b.conf"), 1)
    ]
    assert str(tmp_path / "conf.d/a.conf") in result.files


def test_missing_include_is_reported_with_file_and_line(tmp_path: Path) -> None:
    main = write(tmp_path, "events {}\nhttp {\n    include nothing/here.conf;\n}\n")
    result, _ = lint_file(str(main), Options())
    assert [(f.rule, f.line) for f in result.findings] == [("NGX000", 3)]
    assert "nothing/here.conf" in result.findings[0].message


def test_a_directory_lints_top_level_files_and_skips_what_they_include() -> None:
    outcome = lint_paths([str(CORPUS / "good")], Options())
    linted = {Path(r.path).name for r in outcome.results}
    assert linted == {p.name for p in GOOD}  # inc/*.conf were checked through their includer
    assert all(not r.findings for r in outcome.results)


def test_a_snippet_linted_alone_is_read_as_http_context(tmp_path: Path) -> None:
    snippet = write(tmp_path, "upstream x {\n    server 10.0.0.1:80;\n    server 10.0.0.1:80;\n}\n")
    assert found(snippet) == {(str(snippet), "NGX007", 3)}


def test_parallel_and_serial_runs_agree() -> None:
    files = [str(p) for p in BAD + GOOD]
    serial = lint_paths(files, Options(), jobs=1)
    parallel = lint_paths(files, Options(), jobs=2)
    assert serial.results == parallel.results


# --- exit codes and usage -------------------------------------------------------------


def test_exit_codes() -> None:
    clean = str(CORPUS / "good" / "hand_written.conf")
    warning = str(CORPUS / "bad" / "NGX005-next-upstream-unlimited-tries.conf")
    error = str(CORPUS / "bad" / "NGX001-upstream-empty.conf")
    assert lint_cli(clean).returncode == 0
    assert lint_cli(warning).returncode == 0
    assert lint_cli("--strict", warning).returncode == 1
    assert lint_cli(error).returncode == 1
    missing = lint_cli(clean, "/nonexistent/nginx.conf")
    assert missing.returncode == 2
    assert "/nonexistent/nginx.conf: no such file" in missing.stderr
    assert lint_cli().returncode == 2
    assert lint_cli("--format", "xml", clean).returncode == 2
    bad_rule = lint_cli("--disable", "NGX999", clean)
    assert bad_rule.returncode == 2 and "NGX999" in bad_rule.stderr
    assert "Traceback" not in missing.stderr + bad_rule.stderr


def test_a_directory_without_configs_is_a_usage_error_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("no configs here\n")
    empty = lint_cli(str(tmp_path))
    assert empty.returncode == 2
    assert (
        empty.stderr.strip()
        == f"error: no nginx config files in {tmp_path} (looked for *.conf below it)"
    )
    clean = str(CORPUS / "good" / "hand_written.conf")
    assert lint_cli(clean, str(tmp_path)).returncode == 2  # one empty directory is enough
    missing = lint_cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such file"


def test_text_report_shows_file_line_rule_and_the_offending_line() -> None:
    path = CORPUS / "bad" / "NGX007-upstream-duplicate-server.conf"
    result = lint_cli(str(path))
    assert result.returncode == 1
    first, source = result.stdout.splitlines()[:2]
    assert first == f"{path}:11: error NGX007 server 10.0.0.1:80 appears twice in upstream 'app'"
    assert source.endswith("| server 10.0.0.1:80; # expect: NGX007")
    assert "\x1b[" not in result.stdout  # no colour on a pipe
    assert "1 error" in result.stderr


def test_explain() -> None:
    result = lint_cli("--explain", "ngx009")
    assert result.returncode == 0
    assert result.stdout.startswith("NGX009 keepalive-without-http11 (warning)")
    assert 'proxy_set_header Connection ""' in result.stdout
    assert lint_cli("--explain", "NGX999").returncode == 2


def test_docs_list_every_rule_and_ci_files_are_valid() -> None:
    import yaml

    docs = (REPO / "docs" / "lint.md").read_text()
    for rule in RULES.values():
        assert f"| {rule.id} | `{rule.name}` | {rule.severity} |" in docs, rule.id
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "nginxgen-lint" and hook["entry"] == "nginxgen lint"
    # The example workflow uses the action (tests/test_action.py runs its steps).
    action = yaml.safe_load((REPO / "action.yml").read_text())
    steps = action["runs"]["steps"]
    assert action["inputs"]["format"]["default"] == "sarif"
    assert any("nginxgen lint --format" in s.get("run", "") for s in steps)
    assert any(s.get("uses", "").startswith("github/codeql-action/upload-sarif") for s in steps)


def test_rendered_routes_with_grpc_tls_and_cors_are_clean(tmp_path: Path) -> None:
    """NGX016 counts a grpc_pass (grpc:// or grpcs://) as the use of its upstream, and a
    server block per virtual host as what nginxgen generates."""
    (tmp_path / "services.yaml").write_text(
        "services:\n  g: [{id: g1, address: '127.0.0.1:9001'}]\n"
        "  w: [{id: w1, address: '127.0.0.1:9002'}]\n"
    )
    spec = tmp_path / "nginxgen.yaml"
    spec.write_text(
        "registry: {kind: file, path: services.yaml}\n"
        "nginx: {listen: [8080, {port: 8081, http2: true}]}\n"
        "routes:\n"
        "  - {path: /pkg.Svc/, service: g, protocol: grpc, upstream_tls: {verify: false}}\n"
        "  - {path: /, service: w, methods: [GET], cors: {origins: ['https://*.a.test']},\n"
        "     headers: {response: {set: {Cache-Control: no-store}}}}\n"
        "hosts:\n"  # a server block per host: still a generated config
        "  - server_names: [b.test]\n"
        "    routes: [{path: /, service: w}]\n"
    )
    conf = tmp_path / "nginx.conf"
    rendered = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "--no-nginx-test"]
        + ["-c", str(spec), "-o", str(conf)],
        capture_output=True,
        text=True,
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "grpc_pass grpcs://g;" in conf.read_text()
    assert found(conf) == set()
