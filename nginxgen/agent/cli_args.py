"""Command-line values → AgentConfig, each bad value reported in one sentence."""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Sequence

from ..model.validate import InvalidEntry, is_safe_name, split_address, valid_host, valid_id
from ..spec import parse_duration
from ..util.checks import tls_context
from .base import CONTROL_META, AgentConfig, ControlConfig, HealthCheck

HEALTH_KINDS = ("http", "https", "tcp")
ANY_ADDRESS = ("0.0.0.0", "::")
MAX_META_VALUE = 512  # Consul's limit for a Meta value


class AgentArgsError(ValueError):
    """A command-line value the agent cannot use; str() names the option."""


def _duration(option: str, value: str, *, positive: bool = True) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise AgentArgsError(f"{option}: {exc}") from None
    if positive and seconds <= 0:
        raise AgentArgsError(f"{option}: must be more than 0, got {value!r}")
    return seconds


def _url(option: str, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"https?://\S+", value):
        raise AgentArgsError(f"{option}: must be an http:// or https:// URL, got {value!r}")
    return value


def _meta(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AgentArgsError(f"--meta: expected key=value, got {pair!r}")
        if key in ("registered_at", "weight", "state", CONTROL_META):
            raise AgentArgsError(f"--meta: {key!r} is written by the agent itself")
        if not (key + value).isprintable():
            raise AgentArgsError(f"--meta: {pair!r} has non-printable characters")
        out[key] = value
    return tuple(sorted(out.items()))


def agent_config(
    *,
    service: str,
    address: str,
    instance_id: str | None,
    weight: int,
    meta: Sequence[str],
    tags: Sequence[str],
    ttl: str,
    health_url: str | None,
    health_kind: str | None = None,
    health_address: str | None = None,
    health_ca: str | None = None,
    health_insecure: bool = False,
    health_sni: str | None = None,
    health_interval: str,
    rise: int,
    fall: int,
    wait_healthy: bool,
    drain: str,
    drain_min: str,
    inflight_url: str | None,
    stop_timeout: str,
    command: Sequence[str],
    control_listen: str | None = None,
    control_token_file: str | None = None,
    control_advertise: str | None = None,
    restart_grace: str | None = None,
    restart_limit: str | None = None,
    start_timeout: str | None = None,
) -> AgentConfig:
    if not is_safe_name(service):
        raise AgentArgsError(
            f"--service: {service!r} is not a valid service name "
            "(letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )
    try:
        host, port = split_address(address)
    except InvalidEntry as exc:
        raise AgentArgsError(f"--address: {exc}") from None
    canonical = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if instance_id is None:
        instance_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{service}-{host}-{port}")
    try:
        valid_id(instance_id)
    except InvalidEntry as exc:
        raise AgentArgsError(f"--id: {exc}") from None
    if "/" in instance_id or instance_id in (".", ".."):
        raise AgentArgsError(f"--id: must not contain '/' (it is part of a key): {instance_id!r}")
    if not 1 <= weight <= 1000:
        raise AgentArgsError(f"--weight: must be 1-1000, got {weight}")
    for tag in tags:
        if not tag or not tag.isprintable():
            raise AgentArgsError(f"--tag: must be a non-empty printable string, got {tag!r}")
    if rise < 1 or fall < 1:
        raise AgentArgsError(f"--rise and --fall must be at least 1, got {rise} and {fall}")
    health = _health_check(
        canonical, health_url, health_kind, health_address, health_ca, health_insecure, health_sni
    )
    if wait_healthy and health is None:
        raise AgentArgsError("--wait-healthy needs a health check (--health-url or --health-kind)")
    control = _control(
        control_listen,
        control_token_file,
        control_advertise,
        restart_grace,
        restart_limit,
        start_timeout,
    )
    if control is not None and not command:
        raise AgentArgsError(
            "--control-listen needs a program to restart: nginxgen agent ... -- CMD"
        )
    extra_meta = ((CONTROL_META, control.url),) if control else ()
    ttl_s = _duration("--ttl", ttl)
    if ttl_s < 1:
        raise AgentArgsError(f"--ttl: registries count whole seconds; use 1s or more, got {ttl!r}")
    return AgentConfig(
        service=service,
        instance_id=instance_id,
        address=canonical,
        weight=weight,
        tags=tuple(tags),
        meta=tuple(sorted(_meta(meta) + extra_meta)),
        ttl=ttl_s,
        health=health,
        health_interval=_duration("--health-interval", health_interval),
        rise=rise,
        fall=fall,
        wait_healthy=wait_healthy,
        drain=_duration("--drain", drain, positive=False),
        drain_min=_duration("--drain-min", drain_min, positive=False),
        inflight_url=_url("--inflight-url", inflight_url),
        stop_timeout=_duration("--stop-timeout", stop_timeout),
        command=tuple(command),
        control=control,
    )


def _health_check(
    address: str,
    url: str | None,
    kind: str | None,
    health_address: str | None,
    ca: str | None,
    insecure: bool,
    sni: str | None,
) -> HealthCheck | None:
    """The --health-* options → one HealthCheck (None: no check), or the option at fault."""
    url = _url("--health-url", url)
    if kind is None:
        kind = url.partition(":")[0] if url else "tcp" if health_address else None
    if kind is None:
        for option, value in (("--health-ca", ca), ("--health-sni", sni)):
            if value is not None:
                raise AgentArgsError(f"{option} needs an https:// --health-url")
        if insecure:
            raise AgentArgsError("--health-insecure needs an https:// --health-url")
        return None
    if kind not in HEALTH_KINDS:
        raise AgentArgsError(f"--health-kind: must be http, https or tcp, got {kind!r}")
    if kind != "https" and (ca is not None or sni is not None or insecure):
        raise AgentArgsError(
            f"--health-ca, --health-sni and --health-insecure are for https, not {kind}"
        )
    if kind == "tcp":
        if url is not None:
            raise AgentArgsError(
                "--health-kind tcp checks a connect, not a URL: drop --health-url, "
                "or give --health-address HOST:PORT (default: --address)"
            )
        try:
            host, port = split_address(health_address or address)
        except InvalidEntry as exc:
            raise AgentArgsError(f"--health-address: {exc}") from None
        return HealthCheck("tcp", host=host, port=port)
    if health_address is not None:
        raise AgentArgsError(f"--health-address is for --health-kind tcp, not {kind}")
    if url is None:
        raise AgentArgsError(f"--health-kind {kind} needs --health-url")
    if not url.startswith(f"{kind}://"):
        raise AgentArgsError(f"--health-kind {kind}: --health-url must start with {kind}://")
    if ca is not None and insecure:
        raise AgentArgsError("--health-ca and --health-insecure contradict each other")
    if ca is not None:
        try:
            tls_context(ca)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise AgentArgsError(f"--health-ca {ca}: not a readable PEM CA file ({why})") from None
    if sni is not None:
        sni = _sni(sni)
    return HealthCheck(kind, url=url, ca=ca, insecure=insecure, sni=sni)


def _sni(name: str) -> str:
    try:
        host = valid_host(name)
        ipaddress.ip_address(host)
    except InvalidEntry as exc:
        raise AgentArgsError(f"--health-sni: {exc}") from None
    except ValueError:
        return host  # a DNS name: what SNI carries
    raise AgentArgsError(f"--health-sni: must be a DNS name, not an IP address: {name!r}")


def _control(
    listen: str | None,
    token_file: str | None,
    advertise: str | None,
    grace: str | None,
    limit: str | None,
    start_timeout: str | None,
) -> ControlConfig | None:
    if listen is None:
        given = (
            ("--control-token-file", token_file),
            ("--control-advertise", advertise),
            ("--restart-grace", grace),
            ("--restart-limit", limit),
            ("--start-timeout", start_timeout),
        )
        for option, value in given:
            if value is not None:
                raise AgentArgsError(f"{option} needs --control-listen HOST:PORT")
        return None
    try:
        host, port = split_address(listen)
    except InvalidEntry as exc:
        raise AgentArgsError(f"--control-listen: {exc}") from None
    if not token_file:
        raise AgentArgsError(
            "--control-listen needs --control-token-file (the bearer token callers must send)"
        )
    bracketed = f"[{host}]" if ":" in host else host
    if advertise is None:
        if host in ANY_ADDRESS:
            raise AgentArgsError(
                f"--control-listen {listen} listens on every address: say where the gateway "
                "reaches the agent with --control-advertise URL (e.g. http://10.0.0.5:9901)"
            )
        url = f"http://{bracketed}:{port}"
    else:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", advertise):
            raise AgentArgsError(
                f"--control-advertise: must be an http:// or https:// URL, got {advertise!r}"
            )
        if len(advertise) > MAX_META_VALUE or not advertise.isprintable():
            raise AgentArgsError("--control-advertise: at most 512 printable characters")
        url = advertise.rstrip("/")
    count, window = _limit(limit or "3/10m")
    return ControlConfig(
        host=host,
        port=port,
        token_file=token_file,
        url=url,
        grace=_duration("--restart-grace", grace or "3s", positive=False),
        limit=count,
        window=window,
        start_timeout=_duration("--start-timeout", start_timeout or "60s"),
    )


def _limit(value: str) -> tuple[int, float]:
    """'3/10m' → (3, 600.0)."""
    count, sep, window = value.partition("/")
    if not sep or not re.fullmatch(r"[0-9]{1,6}", count.strip()) or int(count) < 1:
        raise AgentArgsError(
            f"--restart-limit: expected COUNT/WINDOW like 3/10m (at least 1), got {value!r}"
        )
    return int(count), _duration("--restart-limit", window)
