"""The split's state beside nginx.conf, and the push that changes it without a reload.

- `nginxgen-split.json`: every split service's document (plan/split.py), read by nginx's
  master at start and at each reload (lua/nginxgen/split.lua); written atomically before
  a reload and after each push, so nginx started alone serves the last decision.
- the push's bearer token is the endpoint feed's (`nginx.endpoints_token`, default
  nginxgen-endpoints.token beside nginx.conf, created 0600 by the pipeline); only its
  sha256 is in nginx.conf.
- push: POST /nginxgen/split on the loopback status listener; each worker uses the new
  documents from its next request on. Refused or unreachable: the caller reloads instead
  (the reload reads the state file).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..model import names
from ..model.plan import Plan
from ..spec import NginxSpec
from ..util.atomic_write import write_atomic
from ..util.token_file import read_token

PUSH_TIMEOUT = 2.0


@dataclass(frozen=True)
class Pushed:
    ok: bool
    error: str = ""


def state_path(nginx: NginxSpec) -> Path:
    return Path(nginx.output).parent / names.SPLIT_STATE


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
    """The push token (the endpoint feed's, `nginx.endpoints_token`; the pipeline creates
    it); None while it does not exist."""
    path = nginx.token_path
    if not Path(path).exists():
        return None
    return read_token(path, f"nginx.endpoints_token {path}")


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
