"""The example workflow's steps, run as GitHub would run them (`act` is not available).

The composite action's shell steps run in bash with the inputs the workflow's `with:`
gives (defaults for the rest), GitHub's files ($GITHUB_PATH, $GITHUB_OUTPUT) and its
`if:` conditions; `actions/setup-python` becomes this interpreter's directory first on
PATH, and the SARIF upload checks the report it would send. The install step really
installs nginxgen from the action's checkout (this repository) into a fresh venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

WORKFLOW = REPO / "examples" / "ci" / "nginxgen-lint.yml"
ACTION = REPO / "action.yml"
CLEAN = "events {}\nhttp {\n    server {\n        listen 8080;\n        return 204;\n    }\n}\n"
BAD = "events {}\nhttp {\n    upstream app {\n    }\n    server {\n        listen 8081;\n"
BAD += "        location / { proxy_pass http://app; }\n    }\n}\n"


class Runner:
    """One job's steps, the action expanded in place, on a temporary workspace."""

    def __init__(self, workspace: Path, temp: Path) -> None:
        self.workspace, self.temp = workspace, temp
        self.path_file, self.output_file = temp / "github_path", temp / "github_output"
        self.path_file.touch()
        self.uploaded: list[Path] = []
        self.log = ""  # every shell step's stdout and stderr

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        added = [p for p in self.path_file.read_text().splitlines() if p]
        base = os.pathsep.join([*reversed(added), str(Path(sys.executable).parent)])
        return {
            **os.environ,
            "PATH": base + os.pathsep + os.environ.get("PATH", ""),
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_PATH": str(self.path_file),
            "GITHUB_OUTPUT": str(self.output_file),
            **extra,
        }

    def outputs(self) -> dict[str, str]:
        lines = self.output_file.read_text().splitlines() if self.output_file.exists() else []
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def expand(self, value: str, inputs: dict[str, str]) -> str:
        def one(m: re.Match[str]) -> str:
            expr = m.group(1).strip()
            if expr == "github.action_path":
                return str(REPO)
            if expr.startswith("inputs."):
                return inputs[expr.removeprefix("inputs.")]
            if expr.startswith("steps.lint.outputs."):
                return self.outputs().get(expr.rsplit(".", 1)[1], "")
            raise AssertionError(f"unknown expression {expr}")

        return re.sub(r"\$\{\{(.*?)\}\}", one, value)

    def condition(self, cond: str | None, inputs: dict[str, str], failed: bool) -> bool:
        if cond is None:
            return not failed
        expr = cond.replace("always()", "True").replace("&&", " and ").replace("||", " or ")
        expr = re.sub(r"inputs\.([\w-]+)", lambda m: repr(inputs[m.group(1)]), expr)
        expr = re.sub(
            r"steps\.lint\.outputs\.([\w-]+)",
            lambda m: repr(self.outputs().get(m.group(1), "")),
            expr,
        )
        result = bool(eval(expr, {"__builtins__": {}}, {"True": True}))  # noqa: S307 - our own file
        return result if "True" in expr else result and not failed

    def run_action(self, given: dict[str, Any]) -> int:
        action = yaml.safe_load(ACTION.read_text())
        inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
        inputs.update({k: str(v) for k, v in given.items()})
        missing = [k for k, v in action["inputs"].items() if v.get("required") and k not in given]
        assert not missing, missing
        failed = 0
        for step in action["runs"]["steps"]:
            if not self.condition(step.get("if"), inputs, bool(failed)):
                continue
            uses = step.get("uses", "")
            if uses.startswith("actions/setup-python"):
                continue  # this interpreter is first on PATH
            if uses.startswith("github/codeql-action/upload-sarif"):
                sarif = self.workspace / self.expand(step["with"]["sarif_file"], inputs)
                report = json.loads(sarif.read_text())
                assert report["version"] == "2.1.0" and report["runs"][0]["tool"]
                self.uploaded.append(sarif)
                continue
            assert step["shell"] == "bash"
            env = {k: self.expand(str(v), inputs) for k, v in step.get("env", {}).items()}
            done = subprocess.run(
                ["bash", "-e", "-c", self.expand(step["run"], inputs)],
                cwd=self.workspace,
                env=self.env(env),
                capture_output=True,
                text=True,
                timeout=900,
            )
            self.log += done.stdout + done.stderr
            if done.returncode and not failed:
                failed = done.returncode
        return failed

    def run_job(self, job: str) -> int:
        workflow = yaml.safe_load(WORKFLOW.read_text())
        for step in workflow["jobs"][job]["steps"]:
            uses = step["uses"]
            if uses.startswith("actions/checkout"):
                continue  # the workspace is the checkout
            assert uses.startswith("nginxgen/nginxgen@"), uses
            return self.run_action(step.get("with", {}))
        raise AssertionError("the job does not use the action")


def workspace(root: Path, hand_written: str) -> Path:
    ws = root / "repo"
    (ws / "gateway").mkdir(parents=True)
    (ws / "nginx").mkdir()
    for name in ("nginxgen.yaml", "services.yaml", "policies.yaml", "api-keys.txt"):
        if (REPO / "examples" / name).exists():
            shutil.copy(REPO / "examples" / name, ws / "gateway" / name)
    (ws / "nginx" / "site.conf").write_text(hand_written)
    return ws


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUNNER_TEMP after the action's install step ran once (reused: it takes a while)."""
    return tmp_path_factory.mktemp("runner")


def test_the_example_workflow_renders_lints_and_uploads(tmp_path: Path, installed: Path) -> None:
    runner = Runner(workspace(tmp_path, CLEAN), installed)
    code = runner.run_job("lint")
    assert code == 0, runner.log
    assert (runner.workspace / "build" / "nginx.conf").read_text().startswith("# Generated")
    assert runner.outputs()["exit-code"] == "0"
    assert runner.uploaded == [runner.workspace / "nginxgen.sarif"]
    assert (installed / "nginxgen-venv" / "bin" / "nginxgen").exists()  # from the checkout


def test_findings_upload_the_report_and_fail_the_job(tmp_path: Path, installed: Path) -> None:
    runner = Runner(workspace(tmp_path, BAD), installed)
    assert runner.run_job("lint") == 1
    assert runner.outputs()["exit-code"] == "1"
    report = json.loads((runner.workspace / "nginxgen.sarif").read_text())
    assert any(r["ruleId"] == "NGX001" for r in report["runs"][0]["results"])
    assert runner.uploaded  # uploaded although the lint failed: always()


def test_the_annotate_job_prints_github_annotations(tmp_path: Path, installed: Path) -> None:
    runner = Runner(workspace(tmp_path, BAD), installed)
    assert runner.run_job("annotate") == 1
    assert runner.uploaded == []
    assert "::error" in runner.log  # annotations on stdout


def test_pre_commit_hook_runs_the_installed_entry(tmp_path: Path) -> None:
    (hook,) = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert hook["language"] == "python"  # pre-commit pip-installs the repo, like the action
    entry = hook["entry"].split()
    exe = shutil.which(entry[0], path=str(Path(sys.executable).parent))
    assert exe is not None
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    good.write_text(CLEAN)
    bad.write_text(BAD)
    assert re.search(hook["files"], good.name)
    assert subprocess.run([exe, *entry[1:], str(good)], capture_output=True).returncode == 0
    assert subprocess.run([exe, *entry[1:], str(bad)], capture_output=True).returncode == 1
