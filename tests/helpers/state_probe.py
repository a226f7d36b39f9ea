"""Run builds in this (fresh) interpreter and say what they gave and what they left behind.

    python -m tests.helpers.state_probe WORKDIR [shared] a|b ...

Imports every nginxgen module, notes every module global (and class attribute), then for
each step builds spec `a` or `b` from WORKDIR (written there on first use): the pipeline's
build, a one-shot watcher apply, a lint of the result and a registry read. Each build gets
a fresh BuildCache, or all share one with `shared`. The last line of stdout is JSON:
{"builds": [digest of each step's outputs], "changed_globals": [module globals that
differ from before the builds]}. tests/test_layout.py compares runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import sys
import threading
import types
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)

SPECS: dict[str, dict[str, Any]] = {
    "a": {
        "nginx": {
            "listen": 8080,
            "flavor": "nginx",
            "metrics": True,
            "status_listen": "127.0.0.1:9",
        },
        "defaults": {"warmup": {"step_percent": 25, "period": "10s"}},
        "services": {"users": {"balance": "hash $request_uri"}},
        "routes": [
            {"path": "/users/", "service": "users", "rate_limit": {"rate": "10r/s"}},
            {"path": "/orders/", "service": "orders", "strip_prefix": True},
            {"path": "/gone/", "service": "gone"},
        ],
    },
    "b": {
        "nginx": {"listen": 8081, "flavor": "nginx", "status_listen": "off"},
        "defaults": {"warmup": "off"},
        "redis": {"host": "127.0.0.1", "port": 6379},
        "services": {"orders": {"balance": "least_conn"}},
        "routes": [
            {"path": "/", "service": "orders", "cache": {"ttl": "5s"}},
            {"path": "/users/", "service": "users", "limit_conn": 5},
        ],
    },
}
SERVICES = {
    "users": [
        {"id": "u1", "address": "10.0.0.1:80", "registered_at": "2026-11-29T10:00:00Z"},
        {"id": "u2", "address": "10.0.0.2:80", "registered_at": "2026-11-29T11:59:55Z"},
        {"id": "u3", "address": "10.0.0.3:80", "state": "draining"},
    ],
    "orders": [
        {"id": "o1", "address": "10.0.1.1:80", "weight": 5},
        {"id": "o2", "address": "10.0.1.2:80", "tags": ["backup"]},
    ],
}


def write_inputs(work: Path, name: str) -> Path:
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "services.yaml").write_text(yaml.safe_dump({"services": SERVICES}))
    spec = {"registry": {"kind": "file", "path": "services.yaml"}, **SPECS[name]}
    spec["nginx"] = {**spec["nginx"], "output": "out/nginx.conf", "pid": "out/nginx.pid"}
    # The endpoint feed's token is state on disk: a fixed one keeps builds comparable.
    token = d / "feed.token"
    token.write_text("probe-token-0123456789abcdef\n")
    token.chmod(0o600)
    spec["nginx"]["endpoints_token"] = "feed.token"
    path = d / "nginxgen.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def import_everything() -> list[str]:
    names = []
    for path in sorted((REPO / "nginxgen").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        importlib.import_module(name)
        names.append(name)
    return names


def fingerprint(value: Any, depth: int = 0) -> Any:
    if isinstance(value, (str, int, float, bool, type(None), bytes)):
        return repr(value)[:200]
    if isinstance(value, (logging.Logger, type(threading.Lock()), threading.Event)):
        return type(value).__name__  # the standard library's own state
    if depth > 3:
        return type(value).__name__
    if hasattr(value, "cache_info"):  # an lru_cache: how much it holds
        return ("lru_cache", value.cache_info().currsize)
    if isinstance(value, (dict, types.MappingProxyType)):
        items = sorted(((repr(k), fingerprint(v, depth + 1)) for k, v in value.items()))[:200]
        return ("dict", len(value), items)
    if isinstance(value, (list, tuple, deque)):
        return (type(value).__name__, len(value), [fingerprint(v, depth + 1) for v in value][:200])
    if isinstance(value, (set, frozenset)):
        return (type(value).__name__, len(value), sorted(repr(v) for v in value)[:200])
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return "function"
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, dict) and not isinstance(value, type):
        return (type(value).__name__, fingerprint(attrs, depth + 1))
    return type(value).__name__


def snapshot(modules: list[str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name in modules:
        module = sys.modules[name]
        for key, value in vars(module).items():
            if key.startswith("__") or isinstance(value, types.ModuleType):
                continue
            if isinstance(value, type):
                if value.__module__ != name:
                    continue
                for attr, inner in vars(value).items():
                    if not attr.startswith("__") and isinstance(inner, (dict, list, set)):
                        seen[f"{name}.{key}.{attr}"] = fingerprint(inner)
                continue
            seen[f"{name}.{key}"] = fingerprint(value)
    return seen


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def one_step(work: Path, name: str, cache: Any) -> str:
    from nginxgen.lint import Options as LintOptions
    from nginxgen.lint import lint_file
    from nginxgen.pipeline import BuildCache, build
    from nginxgen.sources import open_source
    from nginxgen.spec import load_spec
    from nginxgen.util.clock import Clock
    from nginxgen.watch.loop import Options, Watcher

    class Fixed(Clock):
        def wall(self) -> datetime:
            return T0

    spec_path = write_inputs(work, name)
    spec = load_spec(spec_path)
    source = open_source(spec.registry, spec.service_names)
    catalog = source.read()
    source.close()
    built = build(spec, catalog, binary=None, cache=cache or BuildCache(), now=T0)
    out = Path(spec.nginx.output)
    for stale in (out, out.parent / "nginxgen-state.json"):
        stale.unlink(missing_ok=True)
    watcher = Watcher(spec_path, spec, Options(once=True), clock=Fixed())
    applied = watcher.apply(watcher.read())
    watcher.source.close()
    written = out.read_text() if out.exists() else ""
    lint = lint_file(str(out), LintOptions())[0] if out.exists() else None
    findings = [f"{f.rule}:{f.line}:{f.message}" for f in lint.findings] if lint else []
    return digest(
        built.text,
        repr(built.plan),
        repr(built.verdict),
        applied.result.value,
        written,
        "\n".join(findings),
        repr(sorted(catalog.services)),
    )


def main() -> None:
    work = Path(sys.argv[1])
    steps = sys.argv[2:]
    shared = steps[:1] == ["shared"]
    steps = steps[1:] if shared else steps
    logging.disable(logging.CRITICAL)  # the watcher's log lines are not what is compared
    modules = import_everything()
    from nginxgen.pipeline import BuildCache

    cache = BuildCache() if shared else None
    before = snapshot(modules)
    builds = [one_step(work, name, cache) for name in steps]
    after = snapshot(modules)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    print(json.dumps({"builds": builds, "changed_globals": changed}))


if __name__ == "__main__":
    main()
