"""What the prober does for a pseudo-dead instance: run a command, POST a control center,
or ask the instance's own agent to restart it.

The agent form (`probe.recovery: {agent: true, token_file: FILE}`) reads the URL the agent
advertised in the instance's meta (`nginxgen_control`) and POSTs `<url>/restart` with
`Authorization: Bearer <token>`. That URL is registry data, and the gateway sends a
secret to it: it is used only when it is an http(s) URL on the instance's own host, and
redirects are never followed, so a registry entry cannot send the token elsewhere.

Every call ends in one result, for the log and `nginxgen_recoveries_total{result}`:
ok (the command exited 0, the URL or agent accepted), refused (the agent answered 4xx:
a wrong token, a restart already running, the agent stopping), limited (429: the agent's
restart limit), failed (no answer, 5xx, a non-zero exit, an unreadable token file),
no_endpoint (the instance advertises no usable control URL), held (not called: no other
instance of the service passes its probes).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from ..agent.base import CONTROL_META
from ..model.validate import split_address
from ..spec import Recovery
from ..util.token_file import TokenFileError, read_token

RESULTS = ("ok", "refused", "limited", "failed", "no_endpoint", "held")
_CONTROL_URL = re.compile(r"https?://[^\s/?#@]+(/[^\s?#]*)?")


@dataclass(frozen=True)
class HookRun:
    key: str
    action: str  # "command", "url" or "agent"
    ok: bool
    detail: str
    result: str = ""  # one of RESULTS

    def __post_init__(self) -> None:
        if not self.result:
            object.__setattr__(self, "result", "ok" if self.ok else "failed")


def run(recovery: Recovery, payload: dict[str, Any], control: str | None) -> HookRun:
    """Carry out `recovery` for the instance `payload` describes."""
    if recovery.agent:
        return call_agent(recovery, payload, control)
    if recovery.command is not None:
        return run_command(recovery, payload)
    return post_url(recovery, payload)


def run_command(recovery: Recovery, payload: dict[str, Any]) -> HookRun:
    assert recovery.command is not None
    env = {
        **os.environ,
        "NGINXGEN_SERVICE": payload["service"],
        "NGINXGEN_INSTANCE": payload["instance"],
        "NGINXGEN_ADDRESS": payload["address"],
    }
    try:
        done = subprocess.run(
            list(recovery.command),
            input=json.dumps(payload),
            text=True,
            capture_output=True,
            env=env,
            timeout=recovery.timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return HookRun(payload["key"], "command", False, str(exc))
    return HookRun(payload["key"], "command", done.returncode == 0, f"exit {done.returncode}")


def post_url(recovery: Recovery, payload: dict[str, Any]) -> HookRun:
    assert recovery.url is not None
    try:
        r = _post(recovery.url, payload, {}, recovery.timeout)
    except requests.RequestException as exc:
        return HookRun(payload["key"], "url", False, type(exc).__name__)
    return HookRun(payload["key"], "url", r.ok, f"HTTP {r.status_code}")


def control_url(control: str | None, address: str) -> str | None:
    """The agent's `<url>/restart`, or None when `control` is not an http(s) URL on the
    instance's own host (the only place the gateway sends its token)."""
    if not control or not _CONTROL_URL.fullmatch(control):
        return None
    try:
        parts = urlsplit(control)
        host, _ = split_address(address)
        if parts.port is not None and not 0 < parts.port < 65536:
            return None
    except ValueError:
        return None
    if not _same_host(parts.hostname or "", host):
        return None
    return control.rstrip("/") + "/restart"


def call_agent(recovery: Recovery, payload: dict[str, Any], control: str | None) -> HookRun:
    key, address = payload["key"], payload["address"]
    url = control_url(control, address)
    if url is None:
        why = (
            f"the instance advertises no meta.{CONTROL_META}"
            if not control
            else f"meta.{CONTROL_META} {control[:200]!r} is not an http(s) URL on the "
            f"instance's host ({address}); the token is sent nowhere else"
        )
        return HookRun(key, "agent", False, why, "no_endpoint")
    assert recovery.token_file is not None
    try:
        token = read_token(recovery.token_file, f"probe.recovery.token_file {recovery.token_file}")
    except TokenFileError as exc:
        return HookRun(key, "agent", False, str(exc))
    headers = {"Authorization": f"Bearer {token.decode()}"}
    try:
        r = _post(url, payload, headers, recovery.timeout)
    except requests.RequestException as exc:
        return HookRun(key, "agent", False, f"POST {url}: {type(exc).__name__}")
    detail = f"POST {url}: HTTP {r.status_code}" + _agent_says(r)
    if r.status_code == 202:
        return HookRun(key, "agent", True, detail)
    if r.status_code == 429:
        return HookRun(key, "agent", False, detail, "limited")
    result = "refused" if 400 <= r.status_code < 500 else "failed"
    return HookRun(key, "agent", False, detail, result)


def _post(
    url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float
) -> requests.Response:
    with requests.Session() as s:
        s.trust_env = False  # instances and control centers are reached directly
        return s.post(
            url,
            data=json.dumps(payload),
            headers={"Content-Type": "application/json", **headers},
            timeout=timeout,
            allow_redirects=False,
        )


def _agent_says(r: requests.Response) -> str:
    """The agent's own words: its restart id, or its error (short, printable)."""
    try:
        body = r.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    said = body.get("restart") if r.status_code == 202 else body.get("error")
    if not isinstance(said, str) or not said.isprintable():
        return ""
    return f" ({'restart ' if r.status_code == 202 else ''}{said[:200]})"


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower().rstrip(".") == b.lower().rstrip(".")
