"""Every `require` of an nginxgen Lua module must resolve from the path nginx will use.

`nginx -t` cannot tell: it may run where nginxgen's own files are readable (the sidecar
container), while the nginx that serves the config sees only the config's directory. So
the rendered `lua_package_path` is resolved here, like Lua does (each `?` becomes the
module name with dots as slashes), for every `require("nginxgen...")` in the config and,
in turn, in the modules found; and when the config's directory is known, every entry of
the path must lie inside it. Other modules (cjson, resty.*, nginx.redis) come from the
system's default path (`;;`) and are left to nginx.
"""

from __future__ import annotations

import re
from pathlib import Path

from .findings import Finding

_PACKAGE_PATH = re.compile(r"""^\s*lua_package_path\s+(?:"([^"]*)"|'([^']*)'|(\S+?))\s*;""", re.M)
_REQUIRE = re.compile(r"""require\s*\(?\s*["'](nginxgen(?:\.[A-Za-z0-9_]+)*)["']""")
_IDENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:")


def required(text: str) -> set[str]:
    """The nginxgen modules `text` requires by name. str.find, then the pattern at each
    hit: a regular expression searching a 10 MB config would cost more than the render."""
    names: set[str] = set()
    at = text.find("require")
    while at != -1:
        if at == 0 or text[at - 1] not in _IDENT:
            m = _REQUIRE.match(text, at)
            if m:
                names.add(m.group(1))
        at = text.find("require", at + 7)
    return names


def lua_require_findings(text: str, conf_dir: Path | None = None) -> list[Finding]:
    wanted = sorted(required(text))
    if not wanted:
        return []
    m = _PACKAGE_PATH.search(text)
    raw = next((g for g in m.groups() if g is not None), "") if m else ""
    templates = [t for t in raw.split(";") if t]
    findings: list[Finding] = []
    if conf_dir is not None:
        inside = conf_dir.resolve()
        for t in templates:
            where = Path(t.split("?", 1)[0]).resolve()
            if not where.is_relative_to(inside):
                findings.append(
                    Finding(
                        "lua",
                        f"lua_package_path entry {t} is outside {inside}, the directory "
                        "nginx reads this config from",
                    )
                )
    seen: set[str] = set()
    queue = [(name, "the config") for name in wanted]
    while queue:
        name, by = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        found = _resolve(name, templates)
        if found is None:
            searched = ", ".join(templates) or "no lua_package_path"
            findings.append(
                Finding("lua", f'require "{name}" in {by} cannot be resolved from {searched}')
            )
            continue
        source = found.read_text(encoding="utf-8", errors="replace")
        queue.extend((dep, f"module {name}") for dep in sorted(required(source)))
    return findings


def _resolve(name: str, templates: list[str]) -> Path | None:
    for t in templates:
        candidate = Path(t.replace("?", name.replace(".", "/")))
        if candidate.is_file():
            return candidate
    return None
