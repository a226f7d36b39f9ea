"""Shared test helpers: finding programs and modules, requiring them, polling with deadlines,
the real servers tests start (nginx, Redis, etcd, backends), the fakes for APIs that cannot
run here (Consul, Nacos, Eureka), a gateway kept in step by `nginxgen watch`, and a clock
tests drive.

tests/conftest.py builds its fixtures on these; tests import them from here.
"""

from __future__ import annotations

from .backend import AuthService, Backend, who_answers
from .components import COMPONENTS, in_ci, require_component, require_nginx, skip_or_fail
from .gateway import Client, WatchedGateway, metric, run_cli, start_watched_gateway, write_spec
from .net import closed_port_url, free_port, wait_for_port
from .poll import poll_until, seconds_until
from .servers import (
    REPO,
    Etcd,
    Nginx,
    RedisServer,
    fake_master,
    nginx_workers,
    terminate,
    world_readable_dir,
)
from .tools import NginxInstall, find_nginx, find_tool, search_path

__all__ = [
    "COMPONENTS",
    "REPO",
    "AuthService",
    "Backend",
    "Client",
    "Etcd",
    "Nginx",
    "NginxInstall",
    "RedisServer",
    "WatchedGateway",
    "closed_port_url",
    "fake_master",
    "find_nginx",
    "find_tool",
    "free_port",
    "in_ci",
    "metric",
    "nginx_workers",
    "poll_until",
    "require_component",
    "require_nginx",
    "run_cli",
    "search_path",
    "seconds_until",
    "skip_or_fail",
    "start_watched_gateway",
    "terminate",
    "wait_for_port",
    "who_answers",
    "world_readable_dir",
    "write_spec",
]
