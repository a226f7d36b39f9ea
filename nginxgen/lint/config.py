"""The project's lint settings: `.nginxgen-lint.yaml`, found in the working directory or above.

disable: [NGX010]                 # off everywhere (a project decision, seen in review)
ignore:
  - paths: ["legacy/*.conf"]      # globs, relative to this file's directory
    rules: [NGX011]               # omitted: every rule
    reason: the old edge sets X-Forwarded-For itself
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..util.yaml_load import YamlError, load_yaml
from .findings import Finding
from .rules import canonical
from .rules.suppressions import SUPPRESSION_INVALID

CONFIG_NAME = ".nginxgen-lint.yaml"


class ConfigError(Exception):
    """The project config cannot be read or has the wrong shape (a usage error: exit 2)."""


@dataclass(frozen=True)
class PathIgnore:
    patterns: tuple[str, ...]
    rules: frozenset[str]  # empty: all rules
    reason: str
    line: int


@dataclass(frozen=True)
class ProjectConfig:
    path: str
    base: str  # the directory the ignore globs are relative to
    disable: frozenset[str]
    ignores: tuple[PathIgnore, ...]
    problems: tuple[Finding, ...]  # ignores without a reason, unknown rules (NGX017)

    def ignored(self, file: str, rule: str) -> bool:
        if not self.ignores:
            return False
        rel = os.path.relpath(os.path.abspath(file), self.base).replace(os.sep, "/")
        for ig in self.ignores:
            if (not ig.rules or rule in ig.rules) and any(
                fnmatch.fnmatchcase(rel, p) for p in ig.patterns
            ):
                return True
        return False


def find_project_config(start: Path) -> Path | None:
    """The nearest .nginxgen-lint.yaml from `start` upwards, stopping at a repository root."""
    here = start.resolve()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def load_project_config(path: Path) -> ProjectConfig:
    try:
        document = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read lint config: {exc.strerror}") from None
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    root, data = document.node, document.data or {}
    if not isinstance(data, dict) or set(data) - {"disable", "ignore"}:
        raise ConfigError(f"{path}: expected a mapping with keys 'disable' and 'ignore'")
    shown = str(path)
    problems: list[Finding] = []

    def rule_ids(values: object, key: str, line: int) -> frozenset[str]:
        if values is None:
            return frozenset()
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{path}:{line}: '{key}' must be a list of rule ids")
        ids = set()
        for v in values:
            rid = canonical(v)
            if rid is None:
                problems.append(
                    Finding(
                        SUPPRESSION_INVALID.id,
                        "warning",
                        f"unknown rule {v!r} in '{key}'",
                        shown,
                        line,
                    )
                )
            else:
                ids.add(rid)
        return frozenset(ids)

    disable = rule_ids(data.get("disable"), "disable", 1)
    ignores = []
    entries = data.get("ignore") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'ignore' must be a list of {{paths, rules, reason}}")
    nodes = _ignore_nodes(root)
    for i, entry in enumerate(entries):
        line = nodes[i] if i < len(nodes) else 1
        if not isinstance(entry, dict) or "paths" not in entry:
            raise ConfigError(f"{path}:{line}: each ignore entry needs 'paths'")
        patterns = entry["paths"]
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{path}:{line}: 'paths' must be a glob or a list of globs")
        reason = str(entry.get("reason") or "").strip()
        if not reason:
            problems.append(
                Finding(
                    SUPPRESSION_INVALID.id, "warning", "ignore entry without a reason", shown, line
                )
            )
        ignores.append(
            PathIgnore(tuple(patterns), rule_ids(entry.get("rules"), "rules", line), reason, line)
        )
    return ProjectConfig(
        shown, str(path.resolve().parent), disable, tuple(ignores), tuple(problems)
    )


def _ignore_nodes(root: yaml.Node | None) -> list[int]:
    """1-based line of each entry under `ignore:`, for messages."""
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "ignore" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []
