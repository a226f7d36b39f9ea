"""One pass of the pipeline without side effects on the target: plan → render → verify.

`render` (one-shot) and `watch` (the sidecar loop) both call `build`, the one place that
runs the stages. Whatever a pass may reuse from earlier passes lives in the BuildCache it
is given: a watcher keeps one for its life, `render` makes one, tests make a fresh one.
No module keeps a memo of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .deploy.feed import LOCKED_DIGEST, token_digest
from .deploy.lua_tree import install_lua
from .deploy.nginx_bin import (
    Binary,
    VersionInfo,
    find_binary,
    image_filter_modules,
    lua_modules,
    stream_modules,
)
from .model.catalog import Catalog
from .model.observed import Observed
from .model.plan import Plan
from .plan import PlanMemo, make_plan
from .render import RenderCache, render_parts
from .sources.resolve import HostKinds, drop_unresolvable
from .spec import Spec
from .tls.certs import check_certificates
from .util.heap import without_collector
from .util.token_file import TokenFileError
from .verify import Finding, Verdict, VerifyCache, verify_rendered
from .verify.lua_requires import lua_require_findings


class NginxMissing(Exception):
    pass


class BuildCache:
    """Every memo a pass reuses, one part per stage. Each part checks its own inputs (a
    plan is reused only for equal instances, policy and ramp step; a block text only for
    an equal planned block), so a BuildCache never changes what a build produces, only
    how much of it is computed again."""

    def __init__(self) -> None:
        self.hosts = HostKinds()  # which hosts are IP literals (resolve)
        self.plans = PlanMemo()  # per-service plans, per-spec decisions, catalog digests
        self.render = RenderCache()  # templates, block texts, block digests
        self.verified = VerifyCache()  # blocks that passed verification
        self.versions = VersionInfo()  # `nginx -V` per binary (Lua module paths)
        # The status listener's push token (the endpoint feed's and the split's): its
        # digest (and a note) per token path
        self.feed_tokens: dict[str, tuple[str, str | None]] = {}

    def push_token(self, path: str) -> tuple[str, str | None]:
        """(sha256 of the push token in `path`, a note or None); TokenFileError."""
        known = self.feed_tokens.get(path)
        if known is None:
            known = self.feed_tokens[path] = token_digest(path)
        return known

    def look_token(self, path: str) -> tuple[str, str | None]:
        """push_token for a build that writes nothing (render to stdout): a token file
        that is missing is not created (it is a secret, and a look leaves no files), so
        the digest is a placeholder no token hashes to, and the note says who creates it."""
        if os.path.lexists(path):
            return self.push_token(path)
        note = (
            f"nginx.endpoints_token {path}: not created by a render to stdout; the config "
            "holds a placeholder digest (render -o and watch create the token)"
        )
        return LOCKED_DIGEST, note

    def reload_templates(self, overrides: str | None = None, *, check: bool = False) -> None:
        """SIGHUP, another templates_dir, or (`check`) an edited one: read the templates
        again; rendered blocks go with the old ones. With `check`, overrides that do not
        compile raise TemplateError and the templates in use stay."""
        fresh = RenderCache(overrides=overrides)
        if check:
            fresh.compile_overrides()
        self.render = fresh
        self.feed_tokens.clear()  # the feed token is read again too


@dataclass(frozen=True)
class Build:
    plan: Plan
    text: str
    verdict: Verdict


def nginx_for_test(
    spec: Spec, mode: bool | None, versions: VersionInfo | None = None
) -> Binary | None:
    """The binary for `nginx -t`: mode True requires it, None uses it when present,
    False skips it. A configured `nginx.binary` that does not exist is an error whenever
    nginx -t would run: only "none configured and none on PATH" may fall back."""
    if mode is False:
        return None
    binary = find_binary(spec.nginx, versions)
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
    cache: BuildCache,
    now: datetime | None = None,
    observed: Observed | None = None,
    conf_dir: Path | None = None,
    look: bool = False,
) -> Build:
    """`conf_dir`: the directory the config will be written to (render -o, watch); the
    Lua modules it needs are installed there (deploy/lua_tree.py) before nginx -t.
    `look`: nothing will be written (render to stdout); no push token is created."""
    now = now or datetime.now(timezone.utc)
    try:
        plan = plan_pass(spec, catalog, cache=cache, now=now, observed=observed, look=look)
    except TokenFileError as exc:
        plan = make_plan(spec, catalog, now, observed, memo=cache.plans)
        return Build(plan, "", Verdict((Finding("feed token", str(exc)),), False))
    return build_plan(spec, plan, binary=binary, cache=cache, now=now, conf_dir=conf_dir)


def plan_pass(
    spec: Spec,
    catalog: Catalog,
    *,
    cache: BuildCache,
    now: datetime | None = None,
    observed: Observed | None = None,
    look: bool = False,
) -> Plan:
    """The plan stage alone, as `build` runs it (names resolved, the feed token's digest
    filled in): `watch` compares its structure with the one serving before it renders.
    TokenFileError: the feed token file cannot be used. `look`: as for `build`."""
    catalog = drop_unresolvable(catalog, cache.hosts)
    plan = make_plan(spec, catalog, now, observed, memo=cache.plans)
    token = cache.look_token if look else cache.push_token
    if plan.feed is not None:
        digest, note = token(plan.feed.token_path)
        plan = replace(plan, feed=replace(plan.feed, token_sha256=digest))
        if note:
            plan = replace(plan, notes=plan.notes + (note,))
    if plan.gateway.split:
        # The split's push uses the same token (nginx.endpoints_token), in either mode.
        digest, note = token(spec.nginx.token_path)
        plan = replace(plan, split_token_sha256=digest)
        if note and plan.feed is None:
            plan = replace(plan, notes=plan.notes + (note,))
    return plan


@without_collector
def build_plan(
    spec: Spec,
    plan: Plan,
    *,
    binary: Binary | None,
    cache: BuildCache,
    now: datetime | None = None,
    conf_dir: Path | None = None,
) -> Build:
    """render → verify of a plan from `plan_pass`; `conf_dir` as for `build`."""
    now = now or datetime.now(timezone.utc)
    # Certificates before nginx sees them: an error keeps the running config serving.
    certs = check_certificates(spec, now) if spec.virtual_hosts or spec.hosts else []
    errors = tuple(Finding("certificate", str(c)) for c in certs if c.level == "error")
    if errors:
        return Build(plan, "", Verdict(errors, False))
    warnings = tuple(str(c) for c in certs if c.level == "warning")
    if warnings:
        plan = replace(plan, notes=plan.notes + warnings)
    if cache.render.overrides != spec.templates_dir:
        cache.reload_templates(spec.templates_dir)
    modules = lua_modules(spec.nginx, cache.versions) if plan_uses_lua(plan) else ()
    if spec.streams:
        modules += stream_modules(spec.nginx, cache.versions)
    if plan.bff is not None and plan.bff.image_fits:
        modules += image_filter_modules(spec.nginx, cache.versions)
    lua_dir = install_lua(conf_dir) if conf_dir is not None and plan_uses_lua(plan) else None
    rendered = render_parts(plan, spec.nginx, modules=modules, cache=cache.render, lua_dir=lua_dir)
    if binary is not None:
        ensure_runtime_dirs(spec)
    # Incremental: only blocks that changed since the last good verify are parsed again.
    verdict = verify_rendered(rendered, plan, binary, cache=cache.verified)
    unresolved = tuple(lua_require_findings(rendered.text, conf_dir))
    if unresolved:
        verdict = Verdict(verdict.findings + unresolved, verdict.nginx_tested)
    return Build(plan, rendered.text, verdict)


def plan_uses_lua(plan: Plan) -> bool:
    # API key digests, metrics, the Redis cache, the BFF layer and dynamic upstreams run in Lua.
    return (
        plan.gateway.uses_lua
        or plan.cache is not None
        or plan.bff is not None
        or plan.feed is not None
    )


def ensure_runtime_dirs(spec: Spec) -> None:
    """Directories the rendered config points at must exist before nginx -t or a start."""
    out = Path(spec.nginx.output).parent
    temp = Path(spec.nginx.temp_dir) if spec.nginx.temp_dir else out / "tmp"
    for d in (out, temp, Path(spec.nginx.pid).parent):
        d.mkdir(parents=True, exist_ok=True)
