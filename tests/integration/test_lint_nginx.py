"""`nginxgen lint --nginx-test`: the real nginx binary's verdict, merged as findings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port, require_component, write_spec

pytestmark = pytest.mark.requires("nginx")


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    nginx_dir = str(Path(require_component("nginx")).parent)  # what `lint` finds on PATH
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "lint", "--no-security", "--nginx-test", *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": f"{nginx_dir}:/usr/bin:/bin"},
        timeout=120,
    )


def config(workdir: Path, body: str) -> str:
    return f"""pid {workdir}/nginx.pid;
error_log stderr;
events {{}}
http {{
    access_log off;
    proxy_connect_timeout 1s;
    proxy_read_timeout 1s;
    proxy_send_timeout 1s;
{body}
}}
"""


def test_nginx_rejection_becomes_a_finding_with_file_and_line(workdir: Path) -> None:
    (workdir / "conf.d").mkdir()
    (workdir / "conf.d" / "site.conf").write_text(
        "server {\n    listen 127.0.0.1:1;\n    location / {\n"
        "        return 200;\n    }\n    listen 127.0.0.1:99999;\n}\n"
    )
    conf = workdir / "nginx.conf"
    conf.write_text(config(workdir, "    include conf.d/*.conf;"))
    result = lint("--format", "json", str(conf))
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["findings"]
    nginx = [f for f in findings if f["rule"] == "NGX019"]
    assert nginx, findings
    assert nginx[0]["severity"] == "error"
    assert 'invalid port in "127.0.0.1:99999"' in nginx[0]["message"]
    # nginx names the included file; the finding uses the path the linter reads it by.
    assert nginx[0]["file"] == str(workdir / "conf.d" / "site.conf")
    assert nginx[0]["line"] == 6


def test_nginx_message_without_a_place_points_at_the_linted_file(workdir: Path) -> None:
    conf = workdir / "nginx.conf"
    body = "    server { listen 127.0.0.1:1; location / { proxy_pass http://$nope; } }"
    conf.write_text(config(workdir, body))
    result = lint("--format", "json", str(conf))
    assert result.returncode == 1, result.stderr
    (finding,) = json.loads(result.stdout)["findings"]
    assert finding["rule"] == "NGX019" and finding["file"] == str(conf)
    assert finding["line"] is None
    assert 'unknown "nope" variable' in finding["message"]


def test_a_config_nginx_accepts_passes(workdir: Path) -> None:
    conf = workdir / "nginx.conf"
    conf.write_text(
        config(
            workdir,
            "    upstream app { server 127.0.0.1:1; }\n"
            "    server { listen 127.0.0.1:1; location / { proxy_pass http://app; } }",
        )
    )
    result = lint(str(conf))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_rendered_config_passes_lint_and_nginx_test(workdir: Path) -> None:
    spec = write_spec(
        workdir,
        {
            "nginx": {"flavor": "nginx", "listen": f"127.0.0.1:{free_port()}", "pid": "nginx.pid"},
            "routes": [
                {"path": "/api/", "service": "app"},
                {"path": "/gone/", "service": "gone"},
            ],
        },
        {
            "app": [{"id": "a", "address": "127.0.0.1:9001"}],
            "gone": [{"id": "g", "address": "127.0.0.1:9002", "state": "down"}],
        },
    )
    conf = workdir / "nginx.conf"
    rendered = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(spec), "-o", str(conf)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/sbin:/usr/bin:/bin"},
    )
    assert rendered.returncode == 0, rendered.stderr
    result = lint("--strict", str(conf))
    assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_test_without_a_binary_is_a_usage_error(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\n")
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "lint", "--nginx-test"]
        + ["--nginx-binary", "no-such-openresty", str(conf)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "--nginx-test: no no-such-openresty found on PATH" in result.stderr
