"""The split's state beside nginx.conf, and the push that changes it without a reload.

- `nginxgen-split.json`: every split service's document (plan/split.py), read by nginx's
  master at start and at each reload (lua/nginxgen/split.lua); written atomically before
  a reload and after each push, so nginx started alone serves the last decision.
- `nginxgen-split.token`: the bearer token of the push (created 0600 when missing); only
  its sha256 is in nginx.conf.
- push: POST /nginxgen/split on the loopback status listener; each worker uses the new
  documents from its next request on. Refused or unreachable: the caller reloads instead
  (the reload reads the state file).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..model import names
from ..model.plan import Plan
from ..spec import NginxSpec
from ..util.atomic_write import write_atomic
from ..util.token_file import TokenFileError, read_token

PUSH_TIMEOUT = 2.0


@dataclass(frozen=True)
class Pushed:
    ok: bool
    error: str = ""


def state_path(nginx: NginxSpec) -> Path:
    return Path(nginx.output).parent / names.SPLIT_STATE


def token_path(nginx: NginxSpec) -> Path:
    return Path(nginx.output).parent / names.SPLIT_TOKEN


def documents(plan: Plan) -> dict[str, Any]:
    return {s.service: s.document() for s in plan.splits}


def state_text(plan: Plan) -> str:
    return json.dumps({"services": documents(plan)}, sort_keys=True, indent=1) + "\n"


def write_state(nginx: NginxSpec, plan: Plan) -> None:
    """Atomically; a directory that does not exist is left alone (render to stdout)."""
    path = state_path(nginx)
    if plan.splits and path.parent.is_dir():
        write_atomic(path, state_text(plan).encode("ascii"), backup=False)


def token(nginx: NginxSpec) -> bytes | None:
    """The push token, created when missing; None when its directory does not exist."""
    path = token_path(nginx)
    if not path.parent.is_dir():
        return None
    where = f"split token {path}"
    try:
        return read_token(str(path), where)
    except TokenFileError:
        if path.exists():
            raise
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return read_token(str(path), where)


def token_digest(nginx: NginxSpec) -> str:
    """sha256 hex of the token; all zeros (no token matches) when there is none."""
    try:
        value = token(nginx)
    except (TokenFileError, OSError):
        value = None
    return hashlib.sha256(value).hexdigest() if value else "0" * 64


def push(status_listen: str, secret: bytes, plan: Plan) -> Pushed:
    url = f"http://{status_listen}{names.SPLIT_PATH}"
    body = json.dumps({"services": documents(plan)}, separators=(",", ":"))
    try:
        r = requests.post(
            url,
            data=body,
            headers={
                "Authorization": f"Bearer {secret.decode('ascii', 'replace')}",
                "Content-Type": "application/json",
            },
            timeout=PUSH_TIMEOUT,
        )
    except requests.RequestException as exc:
        return Pushed(False, f"split push to {url}: {type(exc).__name__}")
    if r.status_code != 200:
        try:
            why = str(r.json().get("error", ""))[:200]
        except ValueError:
            why = r.text[:200]
        return Pushed(False, f"split push to {url} refused ({r.status_code}): {why}")
    return Pushed(True)
