"""A `require` the config's lua_package_path cannot resolve fails verification."""

from __future__ import annotations

import shutil
from pathlib import Path

from nginxgen.deploy.lua_tree import install_lua
from nginxgen.util.resources import resource_dir
from nginxgen.verify.lua_requires import lua_require_findings


def conf(lua_dir: Path) -> str:
    return (
        f'http {{\n    lua_package_path "{lua_dir}/?.lua;;";\n'
        '    init_by_lua_block {\n        require("nginxgen.cache").init({})\n'
        '        require "nginxgen.metrics"\n    }\n}\n'
    )


def test_the_installed_tree_resolves_everything(tmp_path: Path) -> None:
    tree = install_lua(tmp_path)
    assert lua_require_findings(conf(tree), tmp_path) == []


def test_a_missing_module_and_a_missing_dependency_are_named(tmp_path: Path) -> None:
    lua = tmp_path / "lua"
    shutil.copytree(resource_dir("lua"), lua)
    (lua / "nginxgen" / "metrics.lua").unlink()
    (lua / "nginxgen" / "cache" / "key.lua").unlink()
    messages = [f.message for f in lua_require_findings(conf(lua), tmp_path)]
    assert f'require "nginxgen.metrics" in the config cannot be resolved from {lua}/?.lua' in (
        messages
    )
    assert any(
        m.startswith('require "nginxgen.cache.key" in module nginxgen.cache') for m in messages
    )


def test_a_path_outside_the_config_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    findings = lua_require_findings(conf(resource_dir("lua")), tmp_path / "conf")
    assert [f.check for f in findings] == ["lua"]
    assert "is outside" in findings[0].message and "the directory nginx reads" in str(findings[0])


def test_no_lua_no_findings(tmp_path: Path) -> None:
    assert lua_require_findings("http {\n}\n", tmp_path) == []
