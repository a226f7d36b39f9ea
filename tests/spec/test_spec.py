"""Spec errors: exit 2 and a message that names the file, the key and the line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nginxgen.spec import SpecError, load_spec, parse_duration

GOOD = """\
registry: {kind: file, path: services.yaml}
nginx: {listen: 8080}
routes:
  - {path: /api/, service: users}
"""

# (what to change, the key the message must name, words it must contain)
BAD = [
    (
        "registry: {kind: file, path: services.yaml}\nroutes: []\n",
        "routes",
        "must list at least one route",
    ),
    ("routes:\n  - {path: /a/, service: users}\n", "registry", "required key is missing"),
    (
        GOOD.replace("kind: file", "kind: zookeeper"),
        "registry.kind",
        "unknown registry kind 'zookeeper' (one of file, consul,",
    ),
    (GOOD.replace("nginx: {listen: 8080}", "nginx: {listen: 99999}"), "nginx.listen", "range"),
    (
        GOOD.replace("nginx: {listen: 8080}", "nginx: {lisen: 8080}"),
        "nginx.lisen",
        "unknown key (check the spelling; see docs/spec.md)",
    ),
    (GOOD.replace("path: /api/", "path: api"), "routes[0].path", "start with '/'"),
    (GOOD.replace("path: /api/", 'path: "/a;b"'), "routes[0].path", "URL path"),
    (GOOD.replace("service: users", 'service: "a b"'), "routes[0].service", "service name"),
    (GOOD + "defaults: {failover: {on: [error, bogus]}}\n", "defaults.failover", "'bogus'"),
    (GOOD + "defaults: {failover: {on: [off, error]}}\n", "defaults.failover", "'off'"),
    (GOOD + "defaults: {failover: {tries: 0}}\n", "defaults.failover.tries", "greater than"),
    (GOOD + "defaults: {failover: {tries: 9}}\n", "defaults.failover", "max_tries"),
    (GOOD + "defaults: {timeouts: {read: soon}}\n", "defaults.timeouts.read", "duration"),
    (GOOD + "defaults: {health: {max_fails: -1}}\n", "defaults.health.max_fails", "greater"),
    (
        GOOD.replace("service: users}", "service: users, failover: {on: [http_999]}}"),
        "routes[0].failover",
        "http_999",
    ),
    (GOOD + "services: {users: {keepalive: -3}}\n", "services.users.keepalive", "greater"),
    (GOOD + "  - {path: /api/, service: other}\n", "routes", "same path"),
    (GOOD + "nginx: {}\n", "", "duplicate"),  # YAML itself: a repeated key is refused
    ("registry: [\n", "", "not valid YAML"),
    (
        GOOD.replace("{listen: 8080}", "{listen: 8080, status_listen: off, metrics: true}"),
        "nginx",
        "metrics are served on status_listen, which is off",
    ),
]


@pytest.mark.parametrize(("text", "key", "words"), BAD)
def test_bad_spec_names_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert f": {key}:" in message or not key, message
    assert words in message, message


ROUTE = "{path: /a/, service: users"
# (spec text after `registry:`, the one error line expected after the file name)
PLAIN = [
    ("routes: []", "2: routes: must list at least one route"),
    ("routes: {a: 1}", "2: routes: must be a list"),
    ("routes: [1]", "2: routes[0]: must be a mapping (key: value) (got 1)"),
    (
        f"routes: [{ROUTE}, timeouts: [1]}}]",
        "2: routes[0].timeouts: must be a mapping (key: value)",
    ),
    (
        f"routes: [{ROUTE}, failover: {{tries: x}}}}]",
        "2: routes[0].failover.tries: must be a whole number (got 'x')",
    ),
    ("routes: [{path: /a/, service: [1]}]", "2: routes[0].service: must be a string"),
    (
        f"hosts: [{{server_names: [], routes: [{ROUTE}}}]}}]\nroutes: [{ROUTE}}}]",
        "2: hosts[0].server_names: must list at least one server name",
    ),
    (
        f"nginx: {{metrics: maybe}}\nroutes: [{ROUTE}}}]",
        "2: nginx.metrics: must be true or false (got 'maybe')",
    ),
    (f"nginx: 3\nroutes: [{ROUTE}}}]", "2: nginx: must be a mapping (key: value) (got 3)"),
]


@pytest.mark.parametrize(("text", "line"), PLAIN)
def test_spec_errors_are_in_plain_words_not_pydantics(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(f"registry: {{kind: file, path: services.yaml}}\n{text}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == f"{path}:{line}"


def test_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(GOOD + "defaults: {failover: {tries: 0}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert f"{path}:5: defaults.failover.tries" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_spec_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nginxgen.cli", "render", "-c", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "spec file not found" in result.stderr


@pytest.mark.parametrize(
    ("nginx", "metrics"),
    [
        ("{listen: 8080}", True),
        ("{listen: 8080, metrics: off}", False),
        ("{listen: 8080, status_listen: off}", False),
        ("{listen: 8080, status_listen: '127.0.0.1:9300', metrics: on}", True),
    ],
)
def test_metrics_are_on_unless_turned_off_or_nowhere_to_serve(
    tmp_path: Path, nginx: str, metrics: bool
) -> None:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(GOOD.replace("{listen: 8080}", nginx))
    assert load_spec(path).nginx.metrics is metrics


def test_routes_and_services_inherit_defaults_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(
        GOOD.replace("service: users}", "service: users, failover: {tries: 3}}")
        + "defaults: {failover: {on: [error], tries: 2, timeout: 4s}, health: {max_fails: 7}}\n"
        + "services: {users: {health: {fail_timeout: 1s}}}\n"
    )
    spec = load_spec(path)
    route = spec.routes[0]
    assert (route.failover.on, route.failover.tries, route.failover.timeout) == (("error",), 3, 4.0)
    health = spec.service_policy("users").health
    assert (health.max_fails, health.fail_timeout) == (7, 1.0)
    assert spec.service_policy("other").health.max_fails == 7


def test_paths_are_relative_to_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "nginxgen.yaml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert spec.registry.path == str(tmp_path / "conf" / "services.yaml")
    assert spec.nginx.output == str(tmp_path / "conf" / "build" / "nginx.conf")


def test_failover_on_is_a_key_not_a_boolean(tmp_path: Path) -> None:
    path = tmp_path / "nginxgen.yaml"
    path.write_text(GOOD + "defaults:\n  failover:\n    on: [timeout]\n")
    assert load_spec(path).defaults.failover.on == ("timeout",)


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("5s", 5), ("1m", 60), ("2h", 7200), (3, 3.0)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_spec_errors_cut_long_values_and_count_the_rest(tmp_path: Path) -> None:
    spec = tmp_path / "nginxgen.yaml"
    spec.write_text(
        "registry: {kind: file, path: s.yaml}\n"
        f"nginx: {{listen: '{'x' * 100_000}'}}\n"
        "routes:\n" + "".join(f"  - {{path: /r{i}/, service: 'b c'}}\n" for i in range(2000))
    )
    with pytest.raises(SpecError) as exc:
        load_spec(spec)
    text = str(exc.value)
    lines = text.splitlines()
    assert "nginx.listen: must be a port or host:port" in lines[0] and "..." in lines[0]
    assert all(len(line) < 400 for line in lines)
    assert "routes[0].service: not a valid service name: 'b c'" in text
    assert len(lines) <= 21 and lines[-1].endswith("and 1981 more errors")
