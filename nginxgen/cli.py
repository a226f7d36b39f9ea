"""The `nginxgen` command. Thin: parse flags, call the pipeline, report.

Exit codes: 0 ok; 1 no valid config could be produced (validation failed, registry
unreadable) or lint findings; 2 usage, spec or output error (a `-o` that cannot be
written, a configured nginx.binary that does not exist, a port already taken). Data
goes to stdout, the human summary and logs to stderr, so pipes stay clean.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .console import ColorMode, LateProgress, apply_color
from .deploy.feed import write_snapshot
from .deploy.split_state import write_state
from .lint.command import err as lint_err
from .lint.command import lint as lint_command
from .listing import catalog_json, catalog_table
from .model.plan import Plan
from .pipeline import Build, BuildCache, NginxMissing, build, nginx_for_test, untested_warning
from .plan.endpoints import endpoints
from .plan.strict import strict_problems
from .sources import RegistryError, Source, open_source
from .spec import DEFAULT_SPEC, Spec, SpecError, load_spec
from .util.atomic_write import InstallError, install_target, write_atomic
from .watch.policy_state import PolicyState, state_path

app = typer.Typer(
    no_args_is_help=True,
    # click's plain help: wrapped to the terminal, every flag name whole at 80 columns
    # (rich's option tables cut long flag names such as --no-health-insecure).
    rich_markup_mode=None,
    help="Keep an nginx/OpenResty gateway in step with a service registry.",
)
err = Console(stderr=True, highlight=False)


def show_version(value: bool) -> None:
    if value:
        print(f"nginxgen {__version__}")
        raise typer.Exit(0)


@app.callback()
def options(
    color: Annotated[
        ColorMode,
        typer.Option(
            "--color", help="Colour on stderr: auto (a terminal, unless NO_COLOR is set)."
        ),
    ] = ColorMode.auto,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Keep an nginx/OpenResty gateway in step with a service registry."""
    apply_color(color, err, lint_err)


ConfigOpt = Annotated[
    Path, typer.Option("--config", "-c", help="Gateway spec (nginxgen.yaml).", show_default=True)
]


def fail(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def load(config: Path) -> Spec:
    try:
        return load_spec(config)
    except SpecError as exc:
        fail(str(exc), 2)


def open_registry(spec: Spec) -> Source:
    """The spec's registry source; settings that cannot work (a secret's variable unset,
    a TLS file missing) are a usage error, exit 2."""
    try:
        return open_source(spec.registry, spec.service_names)
    except RegistryError as exc:
        fail(str(exc), 2)


@app.command()
def render(
    config: ConfigOpt = Path(DEFAULT_SPEC),
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Where to write; '-' for stdout. Default: stdout."),
    ] = None,
    nginx_test: Annotated[
        bool | None,
        typer.Option(
            "--nginx-test/--no-nginx-test",
            help="Run `nginx -t` on the result. Default: when a binary is on PATH.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Summary as JSON on stdout (the config in it, without -o)."),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1, writing nothing, on a route to an unknown service, settings "
            "for a missing one or a dropped registry entry.",
        ),
    ] = False,
) -> None:
    """Read the registry, plan, render and verify nginx.conf; write it atomically."""
    with LateProgress(err, total=3) as progress:
        progress.step("reading the registry", advance=0)
        _render(config, output, nginx_test, as_json, strict, progress)


def _render(
    config: Path,
    output: str | None,
    nginx_test: bool | None,
    as_json: bool,
    strict: bool,
    progress: LateProgress,
) -> None:
    spec = load(config)
    cache = BuildCache()
    try:
        binary = nginx_for_test(spec, nginx_test, cache.versions)
        if output not in (None, "-"):
            install_target(output)  # refuse a bad -o before reading the registry
    except (NginxMissing, InstallError) as exc:
        fail(str(exc), 2)
    if binary is None and nginx_test is None:
        err.print(f"[yellow]warning:[/] {escape(untested_warning(spec))}", soft_wrap=True)
    source = open_registry(spec)
    try:
        catalog = source.read()
    except RegistryError as exc:
        fail(str(exc), 1)
    finally:
        source.close()
    # Warm-up needs to know when each instance was first seen; only a render that writes
    # a file records it (a render to stdout is a look, not a deployment).
    progress.step("planning and verifying")
    state = PolicyState(state_path(spec))
    now = datetime.now(timezone.utc)
    observed = state.observe(catalog, now)
    # Written to a file: the Lua modules go next to it (a look on stdout names the package's).
    conf_dir = Path(output).absolute().parent if output not in (None, "-") else None
    try:
        result = build(
            spec,
            catalog,
            binary=binary,
            cache=cache,
            now=now,
            observed=observed,
            conf_dir=conf_dir,
            look=conf_dir is None,  # to stdout: no token file created
        )
    except InstallError as exc:  # the Lua modules could not be installed next to -o
        fail(str(exc), 2)
    progress.step("writing")
    written = None
    problems = strict_problems(spec, catalog, result.plan) if strict else []
    if result.verdict.ok and not problems:
        if output in (None, "-"):
            if not as_json:  # with --json the config is in the JSON
                sys.stdout.write(result.text)
        else:
            try:
                written = write_atomic(output, result.text)
                write_state(spec.nginx, result.plan)
                feed = result.plan.feed
                if feed is not None and Path(feed.snapshot).parent.is_dir():
                    # The snapshot follows the config written last: nginx started on this
                    # file serves its endpoints, not an earlier watch run's. (No directory:
                    # no snapshot to be older, the file's own endpoints serve.)
                    generation = int(now.timestamp() * 1000)
                    note = write_snapshot(feed.snapshot, generation, endpoints(result.plan))
                    if note:
                        err.print(f"[yellow]warning:[/] {escape(note)}", soft_wrap=True)
            except (InstallError, OSError) as exc:
                fail(str(exc), 2)
            state.save()
    summarize(result, written.path if written else None, as_json, output, problems)
    if not result.verdict.ok or problems:
        raise typer.Exit(1)


def unavailable_routes(plan: Plan) -> list[str]:
    """Routes that answer 503 now: no upstream (reload mode), or an empty endpoint set."""
    empty = {u.name for u in plan.upstreams if not u.servers}
    return [loc.path for loc in plan.locations if loc.upstream is None or loc.upstream in empty]


def summarize(
    result: Build,
    written: str | None,
    as_json: bool,
    output: str | None = None,
    problems: list[str] | None = None,
) -> None:
    plan, verdict = result.plan, result.verdict
    problems = problems or []
    if as_json:
        summary = {
            "ok": verdict.ok,
            "output": written,
            "services": len(plan.upstreams),
            "servers": plan.server_count,
            "routes": len(plan.locations),
            "unavailable_routes": unavailable_routes(plan),
            "dropped": list(plan.dropped),
            "notes": list(plan.notes),
            "next_change_at": plan.next_change_at.isoformat() if plan.next_change_at else None,
            "nginx_tested": verdict.nginx_tested,
            "findings": [str(f) for f in verdict.findings],
            "strict_problems": problems,
        }
        if output in (None, "-"):
            summary["config"] = result.text if verdict.ok and not problems else None
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    # Registry text is data, never rich markup: a name like "[/x]" must print as itself.
    for line in plan.dropped:
        err.print(f"[yellow]dropped:[/] {escape(line)}", soft_wrap=True)
    for line in plan.notes:
        err.print(f"[yellow]note:[/] {escape(line)}", soft_wrap=True)
    if verdict.ok and problems:
        for line in problems:
            err.print(f"[bold red]strict:[/] {escape(line)}", soft_wrap=True)
        err.print("[bold red]--strict: nothing written[/]")
        return
    if not verdict.ok:
        err.print("[bold red]invalid config, nothing written:[/]")
        lines = result.text.splitlines()
        for finding in verdict.findings:
            err.print(f"  {finding}", soft_wrap=True, markup=False)
            if finding.line and 0 < finding.line <= len(lines):
                err.print(
                    f"    {finding.line:>5} | {lines[finding.line - 1].strip()}", markup=False
                )
        return
    tested = "crossplane + nginx -t" if verdict.nginx_tested else "crossplane (no nginx -t)"
    where = f" → {escape(written)}" if written else ""
    err.print(
        f"[green]ok[/] {len(plan.upstreams)} upstreams, {plan.server_count} servers, "
        f"{len(plan.locations)} routes; verified by {tested}{where}",
        soft_wrap=True,
    )


app.command(name="lint")(lint_command)


@app.command()
def watch(
    config: ConfigOpt = Path(DEFAULT_SPEC),
    once: Annotated[
        bool, typer.Option("--once", help="One pass: exit 0 applied or unchanged, 1 failed.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show a diff of what would change; install nothing."),
    ] = False,
    log_format: Annotated[
        str, typer.Option("--log-format", help="text (readable lines) or json (JSON lines).")
    ] = "text",
) -> None:
    """Keep the running nginx in step with the registry: render, verify, install, reload."""
    from .watch import ListenError, Options, Watcher
    from .watch.telemetry import setup_logging

    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, got {log_format!r}", 2)
    spec = load(config)
    setup_logging(log_format)
    try:
        watcher = Watcher(config, spec, Options(once=once, dry_run=dry_run))
    except (RegistryError, NginxMissing, ListenError) as exc:
        fail(str(exc), 2)
    except OSError as exc:  # the output's directories cannot be created, typically
        fail(f"nginx.output {spec.nginx.output}: {(exc.strerror or str(exc)).lower()}", 2)
    raise typer.Exit(watcher.run())


@app.command()
def shift(
    service: Annotated[str | None, typer.Argument(help="The service whose split to shift.")] = None,
    shares: Annotated[
        list[str] | None, typer.Argument(help="VERSION=SHARE, e.g. green=50 (shares of 100).")
    ] = None,
    config: ConfigOpt = Path(DEFAULT_SPEC),
    to: Annotated[
        str | None, typer.Option("--to", help="Blue-green flip: this version takes 100.")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Print the weights in force and where they come from.")
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the override: the spec's weights again.")
    ] = False,
) -> None:
    """Shift a service's traffic between versions for every gateway on the registry."""
    from .plan.make import make_plan
    from .registry.shift import (
        OverrideStore,
        ShiftError,
        parse_assignments,
        shifted,
        to_text,
    )

    spec = load(config)
    splits = {n: p.split for n, p in spec.services.items() if p.split is not None}
    if service is not None and service not in splits:
        known = ", ".join(sorted(splits)) or "none"
        fail(f"service {service!r} has no split in {config} (services with one: {known})", 2)
    if not splits:  # --show (or no arguments) with nothing to show: not silence
        hint = "a split is set under services.NAME.split; see docs/split.md"
        err.print(f"no split routes in {config} ({hint})", markup=False, soft_wrap=True)
        return
    source = open_registry(spec)
    try:
        catalog = source.read()
    except RegistryError as exc:
        fail(str(exc), 1)
    finally:
        source.close()
    plan = make_plan(spec, catalog)
    in_force = {s.service: s for s in plan.splits}
    if show or (service is None and not shares and to is None):
        for name in sorted(splits):
            s = in_force.get(name)
            if s is None:
                sys.stdout.write(f"{name}: not planned (not in the registry)\n")
                continue
            shown = " ".join(f"{v}={bp / 100:g}" for v, bp in s.effective)
            configured = " ".join(f"{v}={w:g}" for v, w in s.configured)
            live = ", ".join(s.live) or "none"
            sys.stdout.write(
                f"{name}: {shown} (from {s.source}: {configured}; live versions: {live})\n"
            )
        return
    assert service is not None
    split = splits[service]
    try:
        store = OverrideStore(spec.registry)
        if clear:
            store.write(service, None)
            err.print(f"{service}: override removed from {store.where(service)}", markup=False)
            return
        if to is not None:
            if shares:
                raise ShiftError("give either --to VERSION or VERSION=SHARE, not both")
            assign = {v: (100.0 if v == to else 0.0) for v in split.versions}
            if to not in split.weights:
                assign = {to: 100.0}
        else:
            assign = parse_assignments(shares or [])
            if not assign:
                raise ShiftError("give VERSION=SHARE (e.g. green=50), --to VERSION or --show")
        current = dict(in_force[service].configured) if service in in_force else split.weights
        weights = shifted(split, current, assign)
        store.write(service, to_text(weights))
    except ShiftError as exc:
        fail(str(exc), 2)
    except RegistryError as exc:
        fail(str(exc), 1)
    except OSError as exc:
        fail(f"cannot write the override: {exc}", 1)
    shown = " ".join(f"{v}={w:g}" for v, w in sorted(weights.items()))
    sys.stdout.write(f"{service}: {shown} written to {store.where(service)}\n")


@app.command()
def services(
    config: ConfigOpt = Path(DEFAULT_SPEC),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False,
) -> None:
    """Show what the registry says: every service and instance, as the catalog sees it."""
    spec = load(config)
    source = open_registry(spec)
    try:
        catalog = source.read()
    except RegistryError as exc:
        fail(str(exc), 1)
    finally:
        source.close()
    for dropped in catalog.dropped:
        err.print(f"[yellow]dropped:[/] {escape(str(dropped))}", soft_wrap=True)
    for note in catalog.notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(catalog_json(catalog), indent=2) + "\n")
        return
    out = Console(highlight=False)
    out.print(catalog_table(catalog))
    err.print(
        f"{len(catalog.services)} services, {catalog.instance_count} instances "
        f"from {catalog.source}",
        soft_wrap=True,
        markup=False,
    )


@app.command()
def status(
    config: ConfigOpt = Path(DEFAULT_SPEC),
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="The sidecar's document as JSON (one line per round with --watch)."
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Redraw every --every seconds until interrupted.")
    ] = False,
    every: Annotated[
        float, typer.Option("--every", help="Seconds between redraws.", min=0.2)
    ] = 2.0,
) -> None:
    """Ask the running sidecar how each instance stands: state, weights, last minute's traffic.

    Exit code: 0 shown, 1 no sidecar answers (or not with a status), 2 a usage or spec
    error (watch.listen is off: there is nothing to ask).
    """
    from .status.command import NoSidecar, connect_to, show

    spec = load(config)
    listen = spec.watch.listen
    if listen == "off":
        fail(
            f"{config}: watch.listen is off, so the sidecar serves no status "
            "(set it to a loopback host:port such as 127.0.0.1:9180)",
            2,
        )
    out = Console(highlight=False)
    try:
        show(connect_to(listen), out, as_json=as_json, watch=watch, every=every)
    except NoSidecar as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def agent(
    service: Annotated[str, typer.Option("--service", help="Service name to register under.")],
    address: Annotated[str, typer.Option("--address", help="HOST:PORT the unit serves on.")],
    command: Annotated[
        list[str] | None,
        typer.Argument(help="After `--`: a program to run, watch and stop after draining."),
    ] = None,
    config: ConfigOpt = Path(DEFAULT_SPEC),
    instance_id: Annotated[
        str | None, typer.Option("--id", help="Instance id. Default: SERVICE-HOST-PORT.")
    ] = None,
    weight: Annotated[int, typer.Option(help="Weight, 1-1000.")] = 1,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="k=v metadata; repeatable.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag; repeatable.")] = None,
    ttl: Annotated[str, typer.Option(help="Lease/check TTL; heartbeat every TTL/3.")] = "10s",
    health_url: Annotated[
        str | None, typer.Option(help="GET it every --health-interval; 2xx is healthy.")
    ] = None,
    health_kind: Annotated[
        str | None,
        typer.Option(help="http, https or tcp. Default: the --health-url's scheme."),
    ] = None,
    health_address: Annotated[
        str | None, typer.Option(help="tcp: HOST:PORT to connect to. Default: --address.")
    ] = None,
    health_ca: Annotated[
        str | None, typer.Option(help="https: trust only this CA file (PEM).")
    ] = None,
    health_insecure: Annotated[
        bool, typer.Option(help="https: do not verify the unit's certificate.")
    ] = False,
    health_sni: Annotated[
        str | None, typer.Option(help="https: TLS name to send and verify. Default: URL host.")
    ] = None,
    health_interval: Annotated[str, typer.Option(help="Between two health probes.")] = "2s",
    rise: Annotated[int, typer.Option(help="Passes in a row that mark the unit up.")] = 2,
    fall: Annotated[int, typer.Option(help="Failures in a row that mark the unit down.")] = 3,
    wait_healthy: Annotated[
        bool, typer.Option(help="Register only after the health URL first answers 2xx.")
    ] = False,
    drain: Annotated[str, typer.Option(help="On SIGTERM/SIGINT: draining time.")] = "15s",
    inflight_url: Annotated[
        str | None,
        typer.Option(help='Ends the drain early when it reports 0 (a number or {"inflight": n}).'),
    ] = None,
    drain_min: Annotated[
        str, typer.Option(help="Least drain time before an in-flight count of 0 counts.")
    ] = "2s",
    stop_timeout: Annotated[
        str, typer.Option(help="After SIGTERM, how long the program gets before SIGKILL.")
    ] = "30s",
    control_listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT for the control endpoint (POST /restart, GET /status)."),
    ] = None,
    control_token_file: Annotated[
        str | None, typer.Option(help="File with the bearer token (mode 0600).")
    ] = None,
    control_advertise: Annotated[
        str | None,
        typer.Option(
            help="URL the gateway calls, in meta.nginxgen_control. Default: http://LISTEN."
        ),
    ] = None,
    restart_grace: Annotated[
        str | None,
        typer.Option(
            help="After the registry stops listing the unit, wait this long. [default: 3s]"
        ),
    ] = None,
    restart_limit: Annotated[
        str | None, typer.Option(help="At most COUNT restarts per WINDOW. [default: 3/10m]")
    ] = None,
    start_timeout: Annotated[
        str | None,
        typer.Option(
            help="After a restart, how long the program gets to pass its health check. "
            "[default: 60s]"
        ),
    ] = None,
) -> None:
    """Register this unit in the registry, heartbeat, follow its health, drain on shutdown.

    Exit code: 0 after a clean shutdown, the program's own code with `-- CMD`,
    2 for a usage or spec error. A registry outage never ends the agent.
    """
    from .agent import open_registrar
    from .agent.cli_args import AgentArgsError, agent_config
    from .agent.control import ControlError
    from .agent.runner import Agent, ChildError

    spec = load(config)
    try:
        cfg = agent_config(
            service=service,
            address=address,
            instance_id=instance_id,
            weight=weight,
            meta=meta or [],
            tags=tag or [],
            ttl=ttl,
            health_url=health_url,
            health_kind=health_kind,
            health_address=health_address,
            health_ca=health_ca,
            health_insecure=health_insecure,
            health_sni=health_sni,
            health_interval=health_interval,
            rise=rise,
            fall=fall,
            wait_healthy=wait_healthy,
            drain=drain,
            drain_min=drain_min,
            inflight_url=inflight_url,
            stop_timeout=stop_timeout,
            command=command or [],
            control_listen=control_listen,
            control_token_file=control_token_file,
            control_advertise=control_advertise,
            restart_grace=restart_grace,
            restart_limit=restart_limit,
            start_timeout=start_timeout,
        )
        registrar = open_registrar(spec.registry, cfg.service, cfg.instance_id, cfg.ttl)
    except (AgentArgsError, ValueError, RegistryError) as exc:
        fail(str(exc), 2)

    def log(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        err.print(
            f"{stamp} agent {cfg.label}: {line}", markup=False, highlight=False, soft_wrap=True
        )

    try:
        code = Agent(cfg, registrar, log).run()
    except (ChildError, ControlError) as exc:
        fail(str(exc), 2)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print the nginxgen version."""
    print(__version__)


def main() -> None:
    app(prog_name="nginxgen")  # also under `python -m nginxgen.cli`: completion names it so


if __name__ == "__main__":
    main()
