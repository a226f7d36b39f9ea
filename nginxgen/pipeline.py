"""One pass of the pipeline without side effects on the target: read → plan → render → verify.

`render` (one-shot) and `watch` (the sidecar loop) both call `build`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .catalog import Catalog
from .heap import without_collector
from .nginx_bin import Binary, find_binary, lua_modules, stream_modules
from .plan import Plan, make_plan
from .render import render_parts
from .resolve import drop_unresolvable
from .spec import Spec
from .tls.certs import check_certificates
from .verify import Finding, Verdict, verify_rendered
from .warmup import Observed


class NginxMissing(Exception):
    pass


@dataclass(frozen=True)
class Build:
    plan: Plan
    text: str
    verdict: Verdict


def nginx_for_test(spec: Spec, mode: bool | None) -> Binary | None:
    """The binary for `nginx -t`: mode True requires it, None uses it when present,
    False skips it. A configured `nginx.binary` that does not exist is an error whenever
    nginx -t would run: only "none configured and none on PATH" may fall back."""
    if mode is False:
        return None
    binary = find_binary(spec.nginx)
    configured = spec.nginx.binary
    if binary is None and configured:
        where = "is not on PATH" if "/" not in configured else "does not exist or is not executable"
        raise NginxMissing(f"nginx.binary: {configured} {where}")
    if binary is None and mode:
        raise NginxMissing(f"--nginx-test: no {spec.nginx.flavor} binary found on PATH")
    return binary


def untested_warning(spec: Spec) -> str:
    """What to say when no binary is configured and none is found: nginx -t is skipped."""
    names = {"auto": "nginx or openresty"}.get(spec.nginx.flavor, spec.nginx.flavor)
    return (
        f"no {names} binary on PATH (nginx.binary is not set): checked by crossplane only, "
        "not by nginx -t"
    )


@without_collector
def build(
    spec: Spec,
    catalog: Catalog,
    *,
    binary: Binary | None,
    now: datetime | None = None,
    observed: Observed | None = None,
) -> Build:
    now = now or datetime.now(timezone.utc)
    plan = make_plan(spec, drop_unresolvable(catalog), now, observed)
    # Certificates before nginx sees them: an error keeps the running config serving.
    certs = check_certificates(spec, now) if spec.virtual_hosts or spec.hosts else []
    errors = tuple(Finding("certificate", str(c)) for c in certs if c.level == "error")
    if errors:
        return Build(plan, "", Verdict(errors, False))
    warnings = tuple(str(c) for c in certs if c.level == "warning")
    if warnings:
        plan = replace(plan, notes=plan.notes + warnings)
    modules = lua_modules(spec.nginx) if plan_uses_lua(plan) else ()
    if spec.streams:
        modules += stream_modules(spec.nginx)
    rendered = render_parts(plan, spec.nginx, modules=modules)
    if binary is not None:
        ensure_runtime_dirs(spec)
    # Incremental: only blocks that changed since the last good verify are parsed again.
    return Build(plan, rendered.text, verify_rendered(rendered, plan, binary))


def plan_uses_lua(plan: Plan) -> bool:
    # API key digests, metrics and the Redis cache run in Lua.
    return plan.gateway.uses_lua or plan.cache is not None


def ensure_runtime_dirs(spec: Spec) -> None:
    """Directories the rendered config points at must exist before nginx -t or a start."""
    out = Path(spec.nginx.output).parent
    temp = Path(spec.nginx.temp_dir) if spec.nginx.temp_dir else out / "tmp"
    for d in (out, temp, Path(spec.nginx.pid).parent):
        d.mkdir(parents=True, exist_ok=True)


def forget_caches() -> None:
    """Drop every memo a pass reuses (per-service plans, block texts, verified blocks,
    catalog digests), so the next pass runs cold. Benchmarks use this; a watcher never
    needs to: each memo checks its inputs."""
    from . import catalog, plan, render, resolve, verify

    for cache in (render.environment, render.render_upstream, render.render_location):
        cache.cache_clear()
    resolve._is_ip.cache_clear()
    verify._VERIFIED.clear()
    render._DIGESTS.clear()
    plan.forget_plans()
    catalog._DIGESTS.clear()
