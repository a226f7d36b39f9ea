"""What `nginxgen status` does: ask the sidecar, print its answer (tables or JSON), and with
`--watch` redraw it in place until interrupted."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live

from .view import BadDocument, parse, tables


class NoSidecar(Exception):
    """Nothing usable answers on the sidecar's listener; the message is one sentence."""


def connect_to(listen: str) -> str:
    """Where to reach a listener bound to `listen` (a wildcard bind: via loopback)."""
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "*", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def fetch(listen: str, timeout: float = 3.0) -> dict[str, Any]:
    """The sidecar's status document, or NoSidecar saying why there is none."""
    url = f"http://{listen}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our listener
            body = r.read()
    except urllib.error.HTTPError as exc:
        raise NoSidecar(
            f"the sidecar on {listen} answered {exc.code} to /status "
            "(an nginxgen watch older than this command?)"
        ) from None
    except (OSError, urllib.error.URLError):
        raise NoSidecar(
            f"no sidecar answers on {listen} (watch.listen): is `nginxgen watch` running "
            "with this spec?"
        ) from None
    try:
        data = json.loads(body)
    except ValueError:
        raise NoSidecar(f"what answers on {listen} is not an nginxgen sidecar") from None
    if not isinstance(data, dict):
        raise NoSidecar(f"what answers on {listen} is not an nginxgen sidecar")
    return data


def show(
    listen: str,
    out: Console,
    *,
    as_json: bool = False,
    watch: bool = False,
    every: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    rounds: int | None = None,  # tests: stop after this many redraws
) -> None:
    """Print the status once, or redraw it every `every` seconds. Raises NoSidecar, or
    BadDocument (as NoSidecar) when the answer is not a status document."""

    def render() -> Any:
        data = fetch(listen)
        try:
            return Group(*tables(parse(data)))
        except BadDocument as exc:
            why = f"the sidecar on {listen} sent a status this command cannot read: {exc}"
            raise NoSidecar(why) from None

    if as_json:
        # One document; with --watch one line per round (JSON lines), for a pipe.
        while True:
            data = fetch(listen)
            text = json.dumps(data, sort_keys=True, indent=None if watch else 2)
            out.print(text, soft_wrap=True, markup=False, highlight=False)
            rounds = None if rounds is None else rounds - 1
            if not watch or rounds == 0:
                return
            sleep(every)
    if not watch:
        out.print(render())
        return
    with Live(render(), console=out, auto_refresh=False) as live:
        n = 1
        while rounds is None or n < rounds:
            sleep(every)
            live.update(render(), refresh=True)
            n += 1
