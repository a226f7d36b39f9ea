"""The nginx/OpenResty binary: finding it, its modules, and `nginx -t`."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .spec import NginxSpec

DEFAULT_MODULES_PATH = "/usr/lib/nginx/modules"  # Debian's stock nginx


@dataclass(frozen=True)
class Binary:
    path: str
    flavor: str  # "openresty" or "nginx"


def find_binary(nginx: NginxSpec) -> Binary | None:
    """The binary the spec asks for; with flavor auto, openresty if on PATH, else nginx."""
    if nginx.binary:
        found = shutil.which(nginx.binary)
        if not found:
            return None
        flavor = nginx.flavor if nginx.flavor != "auto" else _flavor_of(found)
        return Binary(found, flavor)
    names = {"auto": ("openresty", "nginx"), "openresty": ("openresty",), "nginx": ("nginx",)}
    for name in names[nginx.flavor]:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return Binary(found, name)
    return None


def resolved_flavor(nginx: NginxSpec) -> str:
    """openresty or nginx: what the rendered config must suit."""
    if nginx.flavor != "auto":
        return nginx.flavor
    binary = find_binary(nginx)
    return binary.flavor if binary else "nginx"


def _flavor_of(path: str) -> str:
    return "openresty" if "openresty" in _version_text(path).lower() else "nginx"


@lru_cache(maxsize=8)
def _version_text(path: str) -> str:
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stderr + out.stdout


def lua_modules(nginx: NginxSpec) -> tuple[str, ...]:
    """`load_module` paths stock nginx needs for Lua (NDK first); OpenResty needs none."""
    if resolved_flavor(nginx) == "openresty":
        return ()
    base = _modules_path(nginx)
    return (f"{base}/ndk_http_module.so", f"{base}/ngx_http_lua_module.so")


def stream_modules(nginx: NginxSpec) -> tuple[str, ...]:
    """Debian builds stream as a module (libnginx-mod-stream); OpenResty has it built in."""
    if resolved_flavor(nginx) == "openresty":
        return ()
    return (f"{_modules_path(nginx)}/ngx_stream_module.so",)


def _modules_path(nginx: NginxSpec) -> str:
    if nginx.modules_path is not None:
        return nginx.modules_path
    binary = find_binary(nginx)
    m = re.search(r"--modules-path=(\S+)", _version_text(binary.path)) if binary else None
    return m.group(1) if m else DEFAULT_MODULES_PATH


@dataclass(frozen=True)
class TestResult:
    ok: bool
    output: str


def test_config(binary: Binary, conf: Path, timeout: float = 120) -> TestResult:
    """`nginx -t -c conf`; the error log goes to stderr so nothing is written elsewhere."""
    cmd = [binary.path, "-t", "-q", "-e", "stderr", "-c", str(conf)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return TestResult(False, f"{binary.path} -t timed out after {timeout:.0f}s")
    except OSError as exc:
        return TestResult(False, f"cannot run {binary.path}: {exc.strerror}")
    text = (out.stderr + out.stdout).strip()
    return TestResult(out.returncode == 0, text)
