"""Where the tests find the programs they run: nginx or OpenResty (and its modules), gixy,
etcd, redis-server, wrk, curl.

A program next to `sys.executable` (the venv's bin dir: gixy, or an nginx linked there on
purpose) wins over `PATH`; nginx is also looked for where Debian and OpenResty's packages
put it, since /usr/sbin is not on every user's PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from nginxgen.deploy.nginx_bin import Binary, lua_modules, resolved_flavor
from nginxgen.spec import NginxSpec

NGINX_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/local/openresty/bin", "/usr/local/nginx/sbin")
# Dynamic modules beside the Lua pair (lua_modules gives those, NDK first).
MODULE_FILES = {
    "stream": "ngx_stream_module.so",
    "image_filter": "ngx_http_image_filter_module.so",
}


def search_path() -> list[str]:
    """Directories in the order the tests look: the interpreter's own, then PATH."""
    dirs = [str(Path(sys.executable).parent)]  # not resolved: a venv's python is a symlink
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    return list(dict.fromkeys(dirs))


def find_tool(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """The path of program `name`: next to sys.executable, then on PATH, then `extra_dirs`."""
    path = os.pathsep.join(search_path() + list(extra_dirs))
    return shutil.which(name, path=path)


@dataclass(frozen=True)
class NginxInstall:
    """One nginx or OpenResty binary and the dynamic modules a stock nginx must load."""

    path: str
    flavor: str  # "openresty" (modules built in) or "nginx" (load_module lines needed)
    lua: tuple[str, ...]  # NDK + Lua module files; () for OpenResty

    @property
    def binary(self) -> Binary:
        """The production code's view of the same binary (for build(), test_config())."""
        return Binary(self.path, self.flavor)

    @property
    def spec(self) -> NginxSpec:
        return NginxSpec(binary=self.path, flavor=self.flavor)

    def module_files(self, *features: str) -> tuple[str, ...]:
        """Module files for `features` ("lua", "stream", "image_filter"); () for OpenResty."""
        if self.flavor == "openresty":
            return ()
        out: list[str] = []
        for feature in features:
            if feature == "lua":
                out += self.lua
            else:
                out.append(str(Path(self.lua[0]).parent / MODULE_FILES[feature]))
        return tuple(out)

    def missing_modules(self, *features: str) -> tuple[str, ...]:
        return tuple(m for m in self.module_files(*features) if not Path(m).is_file())

    def load_modules(self, *features: str) -> str:
        """`load_module` lines for the top of a hand-written nginx.conf."""
        return "".join(f"load_module {m};\n" for m in self.module_files(*features))


def find_nginx() -> NginxInstall | None:
    """OpenResty or nginx, in the order of `search_path()` then the standard install dirs;
    OpenResty first within a directory, as `nginx.flavor: auto` chooses."""
    for directory in dict.fromkeys(search_path() + list(NGINX_DIRS)):
        for name in ("openresty", "nginx"):
            found = shutil.which(name, path=directory)
            if found:
                spec = NginxSpec(binary=found)
                flavor = resolved_flavor(spec)
                modules = lua_modules(NginxSpec(binary=found, flavor=flavor))  # nginx -V
                return NginxInstall(found, flavor, modules)
    return None
