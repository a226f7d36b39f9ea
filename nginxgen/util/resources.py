"""Where the templates and Lua modules are, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent  # nginxgen/


def resource_dir(name: str) -> Path:
    """`templates` or `lua`: inside the wheel (nginxgen/_data/NAME) or at the repo root."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"nginxgen is installed without its {name}/ directory")
