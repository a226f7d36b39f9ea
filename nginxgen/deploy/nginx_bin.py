"""The nginx/OpenResty binary: finding it, its modules, and `nginx -t`."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..spec import NginxSpec

DEFAULT_MODULES_PATH = "/usr/lib/nginx/modules"  # Debian's stock nginx


@dataclass(frozen=True)
class Binary:
    path: str
    flavor: str  # "openresty" or "nginx"


class VersionInfo:
    """What `<binary> -V` printed, asked once per binary path for the life of this object
    (a BuildCache part: every build asks for the Lua modules' directory)."""

    def __init__(self) -> None:
        self._text: dict[str, str] = {}

    def text(self, path: str) -> str:
        known = self._text.get(path)
        if known is None:
            known = self._text[path] = _version_text(path)
        return known


def find_binary(nginx: NginxSpec, versions: VersionInfo | None = None) -> Binary | None:
    """The binary the spec asks for; with flavor auto, openresty if on PATH, else nginx."""
    if nginx.binary:
        found = shutil.which(nginx.binary)
        if not found:
            return None
        flavor = nginx.flavor if nginx.flavor != "auto" else _flavor_of(found, versions)
        return Binary(found, flavor)
    names = {"auto": ("openresty", "nginx"), "openresty": ("openresty",), "nginx": ("nginx",)}
    for name in names[nginx.flavor]:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return Binary(found, name)
    return None


def resolved_flavor(nginx: NginxSpec, versions: VersionInfo | None = None) -> str:
    """openresty or nginx: what the rendered config must suit."""
    if nginx.flavor != "auto":
        return nginx.flavor
    binary = find_binary(nginx, versions)
    return binary.flavor if binary else "nginx"


def _flavor_of(path: str, versions: VersionInfo | None) -> str:
    text = (versions or VersionInfo()).text(path)
    return "openresty" if "openresty" in text.lower() else "nginx"


def _version_text(path: str) -> str:
    try:
        out = subprocess.run([path, "-V"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stderr + out.stdout


def lua_modules(nginx: NginxSpec, versions: VersionInfo | None = None) -> tuple[str, ...]:
    """`load_module` paths stock nginx needs for Lua (NDK first); OpenResty needs none."""
    versions = versions or VersionInfo()
    if resolved_flavor(nginx, versions) == "openresty":
        return ()
    base = _modules_path(nginx, versions)
    return (f"{base}/ndk_http_module.so", f"{base}/ngx_http_lua_module.so")


def stream_modules(nginx: NginxSpec, versions: VersionInfo | None = None) -> tuple[str, ...]:
    """Debian builds stream as a module (libnginx-mod-stream); OpenResty has it built in."""
    versions = versions or VersionInfo()
    if resolved_flavor(nginx, versions) == "openresty":
        return ()
    return (f"{_modules_path(nginx, versions)}/ngx_stream_module.so",)


def image_filter_modules(nginx: NginxSpec, versions: VersionInfo | None = None) -> tuple[str, ...]:
    """image_fit's resizer: Debian builds it as a module (libnginx-mod-http-image-filter);
    an OpenResty built --with-http_image_filter_module has it inside."""
    versions = versions or VersionInfo()
    if resolved_flavor(nginx, versions) == "openresty":
        return ()
    return (f"{_modules_path(nginx, versions)}/ngx_http_image_filter_module.so",)


def _modules_path(nginx: NginxSpec, versions: VersionInfo) -> str:
    if nginx.modules_path is not None:
        return nginx.modules_path
    binary = find_binary(nginx, versions)
    m = re.search(r"--modules-path=(\S+)", versions.text(binary.path)) if binary else None
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
