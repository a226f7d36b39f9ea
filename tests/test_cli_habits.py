"""The habits people expect of a CLI: --version, completion, colour, --strict, --json,
help that fits 80 columns, progress on a terminal, a typo's message."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

EXAMPLE = REPO / "examples" / "nginxgen.yaml"
COMMANDS = ("", "render", "watch", "lint", "services", "status", "agent", "version")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_version_comes_from_the_one_place_the_package_has_it() -> None:
    import nginxgen

    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"nginxgen {nginxgen.__version__}\n"
    assert importlib.metadata.version("nginxgen") == nginxgen.__version__
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject


def test_shell_completion_is_typers() -> None:
    # What --install-completion writes (it detects the shell from the parent processes,
    # which a test run does not have): the script, then its answers.
    result = run(env={"_NGINXGEN_COMPLETE": "source_bash"})
    assert result.returncode == 0, result.stderr
    assert "--show-completion" in run("--help").stdout
    assert "_nginxgen_completion" in result.stdout
    words = run(env={"_NGINXGEN_COMPLETE": "complete_bash", "COMP_WORDS": "nginxgen ren",
                     "COMP_CWORD": "1"})  # fmt: skip
    assert "render" in words.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_fits_80_columns(command: str) -> None:
    result = run(*([command] if command else []), "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert "…" not in result.stdout  # nothing cut short


def test_colour_follows_no_color_and_the_color_flag(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.yaml")
    always = run("--color", "always", "render", "-c", missing)
    assert always.returncode == 2 and "\x1b[" in always.stderr
    never = run("--color", "never", "render", "-c", missing, env={"FORCE_COLOR": "1"})
    assert "\x1b[" not in never.stderr and "error:" in never.stderr
    no_color = run("render", "-c", missing, env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert "\x1b[" not in no_color.stderr
    assert run("--color", "sometimes", "render").returncode == 2


def strict_spec(tmp_path: Path, routes: list[dict[str, str]], **extra: object) -> Path:
    (tmp_path / "services.yaml").write_text(
        yaml.safe_dump({"services": {"app": [{"id": "a1", "address": "127.0.0.1:9001"}]}})
    )
    spec = {
        "registry": {"kind": "file", "path": "services.yaml"},
        "nginx": {"listen": 8080, "output": "nginx.conf"},
        "routes": routes,
        **extra,
    }
    path = tmp_path / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_strict_fails_what_a_sidecar_would_serve_around(tmp_path: Path) -> None:
    out = tmp_path / "nginx.conf"
    clean = strict_spec(tmp_path, [{"path": "/", "service": "app"}])
    assert run("render", "-c", str(clean), "-o", str(out), "--strict").returncode == 0
    out.unlink()
    cases = {
        "a route goes to service 'ghost', which is not in the registry": strict_spec(
            tmp_path, [{"path": "/", "service": "app"}, {"path": "/g/", "service": "ghost"}]
        ),
    }
    for expected, spec in cases.items():
        result = run("render", "-c", str(spec), "-o", str(out), "--strict")
        assert result.returncode == 1 and expected in result.stderr
        assert not out.exists()
        assert run("render", "-c", str(spec), "-o", str(out)).returncode == 0  # not strict
        out.unlink()
    override = strict_spec(
        tmp_path, [{"path": "/", "service": "app"}], services={"gone": {"keepalive": 4}}
    )
    result = run("render", "-c", str(override), "-o", str(out), "--strict", "--json")
    assert result.returncode == 1 and not out.exists()
    summary = json.loads(result.stdout)
    assert summary["strict_problems"] == [
        "services.gone: settings for a service that is not in the registry"
    ]
    dropped = run("render", "-c", str(EXAMPLE), "--strict", "--no-nginx-test")
    assert dropped.returncode == 1 and dropped.stdout == ""
    assert "strict: dropped registry entry:" in dropped.stderr and "bad;id" in dropped.stderr


def test_json_goes_to_stdout_with_the_config_in_it() -> None:
    result = run("render", "-c", str(EXAMPLE), "--no-nginx-test", "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["ok"] and summary["config"].startswith("# Generated by nginxgen")


def test_a_registry_kind_typo_names_the_kinds_and_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "nginxgen.yaml"
    spec.write_text("routes: [{path: /, service: a}]\nregistry:\n  kind: consull\n  path: s.yaml\n")
    result = run("render", "-c", str(spec))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {spec}:3: registry.kind: unknown registry kind 'consull' "
        "(one of file, consul, etcd, nacos, eureka, kubernetes)"
    )


def on_a_terminal(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout to a pipe); what the terminal got."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "nginxgen.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    return proc.wait(30), text


def test_a_long_render_shows_progress_on_a_terminal_and_a_short_one_does_not(
    tmp_path: Path,
) -> None:
    lines = ["registry: {kind: file, path: services.yaml}", "nginx: {listen: 8080}", "routes:"]
    lines += [f"  - {{path: /s{i}/, service: svc-{i}}}" for i in range(5000)]
    (tmp_path / "nginxgen.yaml").write_text("\n".join(lines) + "\n")
    services = ["services:"]
    for i in range(5000):
        services += [f"  svc-{i}:", f"    - {{id: a, address: 10.0.{i % 250}.1:80}}"]
    (tmp_path / "services.yaml").write_text("\n".join(services) + "\n")
    code, seen = on_a_terminal(["render", "-c", "nginxgen.yaml", "--no-nginx-test"], tmp_path)
    assert code == 0
    assert re.search(r"(reading the registry|planning and verifying|writing)\s+\S+ \d/3", seen)
    code, seen = on_a_terminal(["render", "-c", str(EXAMPLE), "--no-nginx-test"], tmp_path)
    assert code == 0 and "/3" not in seen and "ok " in seen
