"""One YAML loader for every file nginxgen reads: fast, safe, and bounded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

import nginxgen
from nginxgen.agent.base import RegistryDown
from nginxgen.agent.file import FileRegistrar
from nginxgen.lint.config import ConfigError, load_project_config
from nginxgen.sources.base import RegistryError
from nginxgen.sources.file import parse_registry
from nginxgen.spec import FileRegistry, SpecError, load_spec
from nginxgen.util import yaml_load
from nginxgen.util.yaml_load import MAX_ALIAS_NODES, YamlError, load_yaml


def bomb(levels: int, key: str = "x") -> str:
    """'Billion laughs': each level is a list of nine aliases to the level below."""
    lines = [f"{key}0: &l0 [" + ", ".join(['"lol"'] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"{key}{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


REGISTRY_BOMB = bomb(9) + "services:\n  users:\n    - {id: u1, address: '10.0.0.1:80', tags: *l8}\n"
SPEC_BOMB = bomb(9) + "registry: {kind: file, path: s.yaml}\nroutes: *l8\n"


def test_a_one_kilobyte_alias_bomb_is_refused_by_every_loader(tmp_path: Path) -> None:
    assert len(REGISTRY_BOMB) < 1100 and len(SPEC_BOMB) < 1100  # 9**9 = 387M nodes
    registry = tmp_path / "services.yaml"
    registry.write_text(REGISTRY_BOMB)
    with pytest.raises(RegistryError, match=r"file registry .*services.yaml:\d+: aliases expand"):
        parse_registry(registry.read_bytes(), str(registry))
    spec = tmp_path / "nginxgen.yaml"
    spec.write_text(SPEC_BOMB)
    with pytest.raises(SpecError, match=r"nginxgen.yaml:\d+: aliases expand to more than"):
        load_spec(spec)
    lint = tmp_path / ".nginxgen-lint.yaml"
    lint.write_text(bomb(9) + "disable: *l8\n")
    with pytest.raises(ConfigError, match=r"nginxgen-lint.yaml:\d+: aliases expand"):
        load_project_config(lint)
    agent = FileRegistrar(FileRegistry(kind="file", path=str(registry)), "users", "u1", 10)
    with pytest.raises(RegistryDown, match=r"services.yaml:\d+: aliases expand"):
        agent._edit(lambda instances: False)


def test_a_bomb_just_past_the_limit_is_refused_and_one_within_it_loads() -> None:
    # 9**6 = 531,441 nodes through aliases: refused. 9**5 = 59,049: a big but sane file.
    assert 9**5 < MAX_ALIAS_NODES < 9**6
    with pytest.raises(YamlError, match="aliases expand"):
        load_yaml(bomb(6), "big.yaml")
    data = load_yaml(bomb(5), "ok.yaml").data
    assert len(data["x4"]) == 9 and data["x4"][0][0][0][0] == ["lol"] * 9


def test_anchors_and_merge_keys_in_a_spec_still_work(tmp_path: Path) -> None:
    spec = tmp_path / "nginxgen.yaml"
    spec.write_text(
        "registry: {kind: file, path: s.yaml}\n"
        "defaults: {timeouts: &t {read: 5s}}\n"
        "routes:\n"
        "  - {path: /a/, service: users, timeouts: *t}\n"
        "  - {path: /b/, service: users, timeouts: {<<: *t, connect: 1s}}\n"
    )
    routes = load_spec(spec).routes
    assert [r.timeouts.read for r in routes] == [5.0, 5.0] and routes[1].timeouts.connect == 1.0


def test_an_alias_to_its_own_anchor_is_refused() -> None:
    with pytest.raises(YamlError, match=r"loop.yaml:1: an alias refers to its own anchor"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")


@pytest.mark.parametrize(
    ("loader", "depth"),
    [(yaml_load.SafeLoader, 1500), (yaml_load.SafeLoader, 100_000), (yaml.SafeLoader, 1500)],
)
def test_deep_nesting_is_one_clear_error(loader: type[yaml_load.SafeLoader], depth: int) -> None:
    # The C parser has its own depth limit; the pure-Python one would hit RecursionError.
    with pytest.raises(YamlError, match=r"deep.yaml.*(nested|nesting)") as exc:
        load_yaml("[" * depth + "]" * depth, "deep.yaml", loader)
    assert len(str(exc.value)) < 300


def test_aliases_cannot_nest_deeper_than_the_parser_allows() -> None:
    half = 600  # each anchor is within libyaml's 1000 levels; expanded, they are not
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    with pytest.raises(YamlError, match=r"deep.yaml:\d+: nested too deeply"):
        load_yaml(text, "deep.yaml")


def test_a_generated_registry_that_shares_one_mapping_loads() -> None:
    # PyYAML's dumper writes an object used twice as an anchor and aliases: 10,000
    # instances sharing one `meta` expand by 130,000 nodes, fewer than ten times their own.
    meta = {k: "x" for k in ("zone", "team", "tier", "rack", "owner", "cost")}
    services = {
        f"s{i}": [{"id": f"s{i}-{j}", "address": f"10.0.{i % 250}.{j}:80", "meta": meta}
                  for j in range(2)]
        for i in range(5_000)
    }  # fmt: skip
    text = yaml.dump({"services": services}, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper))
    assert "*id001" in text
    catalog = parse_registry(text.encode(), "generated.yaml")
    assert catalog.instance_count == 10_000 and not catalog.dropped


def test_a_value_python_cannot_hold_stays_text_and_drops_one_instance() -> None:
    raw = (
        "services:\n"
        "  users:\n"
        "    - {id: u1, address: 10.0.0.1:80}\n"
        f"    - {{id: u2, address: 10.0.0.2:80, weight: {'9' * 5000}}}\n"
        "    - {id: u3, address: 10.0.0.3:80, registered_at: 2026-13-45T10:00:00Z}\n"
        f"    - {{id: u4, address: 10.0.0.4:80, meta: {{big: 0x{'f' * 5000}}}}}\n"
    )
    catalog = parse_registry(raw.encode(), "services.yaml")
    assert [i.id for i in catalog.services["users"]] == ["u1", "u4"]
    reasons = {d.instance: (d.field, d.reason) for d in catalog.dropped}
    assert "weight must be a finite number" in reasons["u2"][1]
    assert "registered_at is not an ISO 8601 time" in reasons["u3"][1]
    assert reasons["u4"][0] == "meta"  # informational: left out, instance kept
    assert all(len(r) < 400 for _, r in reasons.values())


def test_errors_never_quote_a_whole_value(tmp_path: Path) -> None:
    long_key = "k" * 10_000
    spec = tmp_path / "nginxgen.yaml"
    # An explicit key ("? "): plain keys are limited to 1024 characters by the parser.
    spec.write_text(
        f"registry: {{kind: file, path: s.yaml}}\n? {long_key}\n: 1\n? {long_key}\n: 2\n"
    )
    with pytest.raises(SpecError, match="duplicate key") as exc:
        load_spec(spec)
    assert len(str(exc.value)) < 300
    with pytest.raises(YamlError) as bad:
        load_yaml(f"a: !!python/object:{'x' * 10_000} {{}}\n", "tag.yaml")
    assert len(str(bad.value)) < 300


def test_the_c_parser_is_used_when_pyyaml_has_it() -> None:
    if yaml.__with_libyaml__:
        assert issubclass(yaml_load.SafeLoader, yaml.CSafeLoader)
    assert issubclass(yaml_load.SafeLoader, yaml.constructor.SafeConstructor)


def test_every_yaml_load_in_the_package_goes_through_the_helper() -> None:
    loads = {"load", "safe_load", "full_load", "unsafe_load", "compose", "load_all"}
    loads |= {"safe_load_all", "compose_all", "SafeLoader", "CSafeLoader", "Loader"}
    package = Path(nginxgen.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        if path.name == "yaml_load.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "yaml"
                and node.attr in loads
            ):
                found.append(f"{path.relative_to(package)}:{node.lineno}: yaml.{node.attr}")
    assert found == []
