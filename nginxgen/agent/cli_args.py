"""Command-line values → AgentConfig, each bad value reported in one sentence."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..model.validate import InvalidEntry, is_safe_name, split_address, valid_id
from ..spec import parse_duration
from .base import AgentConfig


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
        if key in ("registered_at", "weight", "state"):
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
    health_interval: str,
    rise: int,
    fall: int,
    wait_healthy: bool,
    drain: str,
    drain_min: str,
    inflight_url: str | None,
    stop_timeout: str,
    command: Sequence[str],
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
    if wait_healthy and not health_url:
        raise AgentArgsError("--wait-healthy needs --health-url")
    ttl_s = _duration("--ttl", ttl)
    if ttl_s < 1:
        raise AgentArgsError(f"--ttl: registries count whole seconds; use 1s or more, got {ttl!r}")
    return AgentConfig(
        service=service,
        instance_id=instance_id,
        address=canonical,
        weight=weight,
        tags=tuple(tags),
        meta=_meta(meta),
        ttl=ttl_s,
        health_url=_url("--health-url", health_url),
        health_interval=_duration("--health-interval", health_interval),
        rise=rise,
        fall=fall,
        wait_healthy=wait_healthy,
        drain=_duration("--drain", drain, positive=False),
        drain_min=_duration("--drain-min", drain_min, positive=False),
        inflight_url=_url("--inflight-url", inflight_url),
        stop_timeout=_duration("--stop-timeout", stop_timeout),
        command=tuple(command),
    )
