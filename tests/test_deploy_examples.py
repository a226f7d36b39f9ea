"""The Dockerfile, the systemd units, the compose file and the pod, checked as written.

Nothing here builds an image (docker has no network on the test machine): each file's
paths, users, ports and command lines are checked against the package and the example
spec they mount, and the command lines themselves run here with the venv's nginxgen.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import tomllib
import yaml

from nginxgen.deploy.lua_tree import LUA_TREE
from nginxgen.spec import load_spec
from tests.helpers import REPO, free_port, poll_until, require_component

DOCKERFILE = REPO / "Dockerfile"
SIDECAR = REPO / "examples" / "sidecar"
SYSTEMD = REPO / "examples" / "systemd"
NGINXGEN = Path(sys.executable).parent / "nginxgen"  # the console script, as in the image


def stages() -> dict[str, list[tuple[str, str]]]:
    """Dockerfile stage name → its (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        if op == "FROM":
            current = out.setdefault(args.split(" AS ")[-1].strip(), [])
        current.append((op, args.strip()))
    return out


def exec_form(args: str) -> list[str]:
    value = yaml.safe_load(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def test_the_dockerfile_copies_what_the_repository_has_and_runs_nginxgen_unprivileged() -> None:
    s = stages()
    assert {"wheels", "sidecar", "gateway"} <= set(s)
    for stage in s.values():
        for op, args in stage:
            if op == "COPY" and not args.startswith("--from"):
                *sources, _ = args.split()
                for src in sources:
                    assert (REPO / src).exists(), src
    user = dict(s["sidecar"])["USER"]
    assert user.split(":")[0] not in ("0", "root")
    # What the wheel needs besides the package: the force-included templates and Lua.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for src in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]:
        assert any(a.startswith(src) for op, a in s["wheels"] if op == "COPY"), src
    base = dict(s["sidecar"])["FROM"]
    assert "python:${PYTHON}-slim" in base
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    declared = re.search(r"ARG PYTHON=([0-9.]+)", DOCKERFILE.read_text())
    assert declared and tuple(map(int, declared.group(1).split("."))) >= tuple(
        map(int, minimum.split("."))
    )
    # The gateway image installs the list scripts/test installs.
    assert "packaging/debian-packages.txt" in (REPO / "scripts" / "test").read_text()
    assert any("debian-packages.txt" in a for _, a in s["gateway"])


def sidecar_spec(tmp: Path) -> Path:
    """examples/sidecar/nginxgen.yaml with its absolute paths and ports moved into `tmp`."""
    text = (SIDECAR / "nginxgen.yaml").read_text()
    text = text.replace("/run/nginxgen", str(tmp / "run")).replace("/etc/nginxgen", str(tmp))
    text = text.replace("127.0.0.1:9181", f"127.0.0.1:{free_port()}")
    text = text.replace("0.0.0.0:9180", f"127.0.0.1:{free_port()}")
    (tmp / "registry").mkdir()
    (tmp / "registry" / "services.yaml").write_text((SIDECAR / "services.yaml").read_text())
    (tmp / "run").mkdir()
    spec = tmp / "nginxgen.yaml"
    spec.write_text(text)
    return spec


def test_the_sidecar_entrypoint_and_command_run_as_the_image_runs_them(tmp_path: Path) -> None:
    sidecar = dict(stages()["sidecar"])
    command = exec_form(sidecar["ENTRYPOINT"]) + exec_form(sidecar["CMD"])
    assert command[0] == "nginxgen" and NGINXGEN.exists()
    spec = sidecar_spec(tmp_path)
    args = [str(spec) if a == "/etc/nginxgen/nginxgen.yaml" else a for a in command[1:]]
    done = subprocess.run(
        [str(NGINXGEN), *args, "--once"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "run" / "nginx.conf").read_text()
    trees = list((tmp_path / "run" / LUA_TREE).iterdir())
    assert len(trees) == 1 and f"{trees[0]}/?.lua;;" in conf  # Lua in the shared volume


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit file: section → (key, value) in order (keys repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def last(entries: list[tuple[str, str]], key: str) -> str:
    return [v for k, v in entries if k == key][-1]


def test_systemd_units_start_nginxgen_first_and_point_nginx_at_the_rendered_config(
    tmp_path: Path,
) -> None:
    require_component("nginx")
    service = unit(SYSTEMD / "nginxgen.service")
    dropin = unit(SYSTEMD / "nginx.service.d" / "nginxgen.conf")
    spec = load_spec(SYSTEMD / "nginxgen.yaml")
    output, pid = Path(spec.nginx.output), Path(spec.nginx.pid)
    # nginx needs the config nginxgen renders: nginxgen first, on both sides.
    assert "nginx.service" in last(service["Unit"], "Before").split()
    assert "nginxgen.service" in last(dropin["Unit"], "After").split()
    runtime = Path("/run") / last(service["Service"], "RuntimeDirectory")
    assert output.parent == runtime and pid.parent == runtime
    assert last(service["Service"], "RuntimeDirectoryPreserve") == "yes"  # nginx keeps it
    state = Path("/var/lib") / last(service["Service"], "StateDirectory")
    assert spec.nginx.state_file and Path(spec.nginx.state_file).parent == state
    assert last(dropin["Service"], "PIDFile") == str(pid)
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        values = [v for k, v in dropin["Service"] if k == key]
        assert values[0] == "" and f"-c {output}" in values[-1], key  # the package's dropped

    # The command lines, run here: the first render, then nginx -t as the drop-in runs it.
    moves = {str(runtime): str(tmp_path / "run"), str(state): str(tmp_path / "state"),
             "/etc/nginxgen": str(tmp_path), "/var/log/nginx/error.log": "stderr",
             "listen: 80\n": f"listen: {free_port()}\n",
             "127.0.0.1:9181": f"127.0.0.1:{free_port()}"}  # fmt: skip
    text = (SYSTEMD / "nginxgen.yaml").read_text()
    for old, new in moves.items():
        text = text.replace(old, new)
    if subprocess.run(["id", "www-data"], capture_output=True).returncode != 0:
        text = text.replace("user: www-data", "user: nobody")
    (tmp_path / "nginxgen.yaml").write_text(text)
    (tmp_path / "services.yaml").write_text((SYSTEMD / "services.yaml").read_text())
    for d in ("run", "state"):
        (tmp_path / d).mkdir()

    def moved(line: str) -> list[str]:
        for old, new in moves.items():
            line = line.replace(old, new)
        return shlex.split(line)

    first = moved(last(service["Service"], "ExecStartPre"))
    assert first[0] == "/usr/local/bin/nginxgen"
    first[0] = str(NGINXGEN)
    done = subprocess.run(first, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from tests.helpers import find_nginx

    found = find_nginx()
    assert found is not None
    check = moved(last(dropin["Service"], "ExecStartPre"))
    assert check[0] == "/usr/sbin/nginx"
    check[0] = found.path
    done = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_compose_publishes_the_gateway_and_metrics_and_shares_one_path() -> None:
    compose = yaml.safe_load((SIDECAR / "docker-compose.yaml").read_text())
    spec = load_spec(SIDECAR / "nginxgen.yaml")
    conf_dir = str(Path(spec.nginx.output).parent)
    services = compose["services"]
    metrics_port = spec.watch.listen.rsplit(":", 1)[1]
    listen_port = str(spec.nginx.listeners[0].port)
    sidecar = services["nginxgen"]
    shared = sidecar["network_mode"].removeprefix("service:")
    published = {p.split(":")[0] for p in services[shared]["ports"]}
    assert {metrics_port, listen_port} <= published
    for name, svc in services.items():
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
        assert mounts.get(conf_dir) == "conf", name  # the same path everywhere
    assert sidecar["image"] == services["first-render"]["image"] == "nginxgen:sidecar"
    uid = dict(stages()["sidecar"])["USER"]
    assert services[shared]["user"] == uid  # the sidecar may signal the master


def test_the_pod_keeps_the_config_and_its_lua_in_one_shared_volume() -> None:
    pod = yaml.safe_load((SIDECAR / "pod.yaml").read_text())
    spec = load_spec(SIDECAR / "nginxgen.yaml")
    conf_dir = str(Path(spec.nginx.output).parent)
    containers = pod["spec"]["initContainers"] + pod["spec"]["containers"]
    for c in containers:
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts.get(conf_dir) == "conf", c["name"]
    uid = dict(stages()["sidecar"])["USER"].split(":")[0]
    assert str(pod["spec"]["securityContext"]["runAsUser"]) == uid
    nginxgen = next(c for c in containers if c["name"] == "nginxgen")
    assert {p["containerPort"] for p in nginxgen["ports"]} == {
        int(spec.watch.listen.rsplit(":", 1)[1])
    }


def test_the_gateway_image_entrypoint_renders_starts_nginx_and_watches(workdir: Path) -> None:
    require_component("nginx")
    from tests.helpers import find_nginx

    found = find_nginx()
    assert found is not None
    port, health = free_port(), free_port()
    (workdir / "services.yaml").write_text((SYSTEMD / "services.yaml").read_text())
    spec = workdir / "nginxgen.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "registry": {"kind": "file", "path": "services.yaml"},
                "nginx": {
                    "flavor": "nginx",
                    "listen": f"127.0.0.1:{port}",
                    "output": str(workdir / "run" / "nginx.conf"),
                    "pid": str(workdir / "run" / "nginx.pid"),
                    "status_listen": f"127.0.0.1:{free_port()}",
                },
                "watch": {"listen": f"127.0.0.1:{health}"},
                "routes": [{"path": "/api/users/", "service": "users"}],
            }
        )
    )
    (workdir / "run").mkdir(mode=0o755)
    gateway = dict(stages()["gateway"])
    assert exec_form(gateway["ENTRYPOINT"]) == ["/usr/local/bin/gateway-entrypoint"]
    env = {
        **os.environ,
        "PATH": f"{NGINXGEN.parent}{os.pathsep}{os.environ['PATH']}",
        "NGINXGEN_SPEC": str(spec),
        "NGINXGEN_CONF": str(workdir / "run" / "nginx.conf"),
        "NGINX_BINARY": found.path,
    }
    log = open(workdir / "entrypoint.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["sh", str(REPO / "packaging" / "gateway-entrypoint.sh")], env=env, stdout=log, stderr=log
    )
    try:
        status = poll_until(
            lambda: _status(f"http://127.0.0.1:{port}/api/users/"),
            60,
            "the gateway answers",
            detail=lambda: (workdir / "entrypoint.log").read_text()[-2000:],
        )
        assert status >= 400  # nginx answers; the example's backends do not run here
        poll_until(  # the watcher the entrypoint exec'd is up
            lambda: _status(f"http://127.0.0.1:{health}/healthz"), 60, "the watcher's /healthz"
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0  # nginxgen was exec'd: it is the main process
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        pid_file = workdir / "run" / "nginx.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGQUIT)


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


@pytest.mark.parametrize("path", ["Dockerfile", "packaging/gateway-entrypoint.sh"])
def test_shell_is_valid(path: str) -> None:
    if path.endswith(".sh"):
        assert subprocess.run(["sh", "-n", str(REPO / path)]).returncode == 0
    else:
        assert "ENTRYPOINT" in (REPO / path).read_text()
