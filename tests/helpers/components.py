"""What a test needs from the machine, and what happens when it is missing.

`require_component("etcd")` returns the program's path. When it is missing the test is
skipped on a developer's machine, but fails under `CI=true`: scripts/test installs every
component listed here, so a skip in CI would hide a broken setup, not a missing extra.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import pytest

from .tools import NginxInstall, find_nginx, find_tool


@dataclass(frozen=True)
class Component:
    what: str  # for the message: "etcd", "nginx with the Lua module"
    install: str  # how to get it: the Debian package(s), or the pip extra
    find: Callable[[], str | None]  # the path that proves it is there, or None


def _nginx_with(*features: str) -> Callable[[], str | None]:
    def find() -> str | None:
        nginx = find_nginx()
        if nginx is None or nginx.missing_modules(*features):
            return None
        return nginx.path

    return find


def _gixy() -> str | None:
    import importlib.util

    # Both halves of gixy-next: the CLI (test_gateway) and the package (nginxgen lint).
    return find_tool("gixy") if importlib.util.find_spec("gixy") else None


def _program(name: str, package: str) -> Component:
    return Component(name, f"apt-get install {package}", lambda: find_tool(name))


COMPONENTS: dict[str, Component] = {
    "nginx": Component("nginx", "apt-get install nginx", _nginx_with()),
    "nginx-lua": Component(
        "nginx with the Lua module",
        "apt-get install nginx libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core",
        _nginx_with("lua"),
    ),
    "nginx-stream": Component(
        "nginx with the stream module",
        "apt-get install libnginx-mod-stream",
        _nginx_with("stream"),
    ),
    "nginx-image-filter": Component(
        "nginx with the image filter module",
        "apt-get install libnginx-mod-http-image-filter",
        _nginx_with("image_filter"),
    ),
    "etcd": _program("etcd", "etcd-server"),
    "etcdctl": _program("etcdctl", "etcd-client"),
    "redis-server": _program("redis-server", "redis-server"),
    "wrk": _program("wrk", "wrk"),
    "curl": _program("curl", "curl"),
    "openssl": _program("openssl", "openssl"),
    "gixy": Component("gixy-next", "pip install -e '.[security]' into the venv", _gixy),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(message: str) -> NoReturn:
    """Skip on a developer's machine; fail under CI=true, where scripts/test provides it."""
    if in_ci():
        pytest.fail(f"{message}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(message)


def require_component(name: str) -> str:
    """The path of component `name`; skip the test without it (fail it under CI=true)."""
    component = COMPONENTS[name]
    found = component.find()
    if found:
        return found
    skip_or_fail(f"{component.what} is not installed ({component.install}; scripts/test does it)")


def require_nginx(*features: str) -> NginxInstall:
    """nginx or OpenResty with `features` ("lua", "stream", "image_filter"), as
    require_component does for a program."""
    for feature in features or ("",):
        require_component(f"nginx-{feature.replace('_', '-')}" if feature else "nginx")
    found = find_nginx()
    assert found is not None  # require_component found it a moment ago
    return found
