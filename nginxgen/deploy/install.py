"""Install a verified config: write it, reload nginx onto it, confirm it serves, or roll back.

`install` is one step with one answer: an `Installed` record that says what was written,
whether nginx was reloaded, whether the new generation was confirmed and whether the old
bytes went back, so the watch loop, its metrics and the tests read the same outcome.

What is promised: when the new config does not serve (the reload fails, or nginx does not
answer the new generation within `confirm_timeout`), the file holds exactly the bytes that
were there before (or no file, if there was none) and nginx is reloaded onto them if it
was reloaded onto the new ones. Nothing here decides *whether* to install; that is the
caller's (verify first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..spec import NginxSpec
from ..util.atomic_write import InstallError, WriteResult, restore_previous, write_atomic
from ..util.clock import Clock
from ..util.logs import event
from .confirm import confirm_generation
from .nginx_bin import Binary
from .reload import find_master, reload_nginx
from .workers import Worker, children

log = logging.getLogger("nginxgen.deploy")


@dataclass(frozen=True)
class Installed:
    """What one install did. `failed` names the step that failed ("" when it served)."""

    written: WriteResult | None = None  # None: nothing written (already there, or failed)
    failed: str = ""  # "write", "reload", "confirm" or "" (the new config serves)
    error: str = ""  # one sentence: why it does not serve
    running: bool = True  # False: no master yet; it starts on the new file
    reloaded: bool = False  # the master was told to load the new config, and took it
    confirmed: bool = False  # the status listener answered the new generation
    rolled_back: bool = False  # the old bytes (or no file) are back
    # The master's processes from before the reload (old workers finish on the old config).
    old_workers: frozenset[Worker] = frozenset()

    @property
    def ok(self) -> bool:
        return not self.failed


def install(
    text: str,
    generation: str,
    nginx: NginxSpec,
    binary: Binary | None,
    *,
    installed: str | None,
    confirm_timeout: float,
    clock: Clock | None = None,
) -> Installed:
    """Put `text` at nginx.output (unless `installed`, the file's current text, is it
    already), reload, and confirm `generation` on the status listener when there is one."""
    output = Path(nginx.output)
    try:
        written = write_atomic(output, text) if text != installed else None
    except InstallError as exc:
        # Nothing changed on disk.
        return Installed(failed="write", error=f"install: {exc}")
    try:
        return _reload_and_confirm(nginx, binary, generation, written, confirm_timeout, clock)
    except Exception:
        # Whatever broke between install and confirm, the file goes back to what it was.
        rollback(nginx, binary, written, reload_again=True)
        raise


def _reload_and_confirm(
    nginx: NginxSpec,
    binary: Binary | None,
    generation: str,
    written: WriteResult | None,
    timeout: float,
    clock: Clock | None,
) -> Installed:
    master, _ = find_master(nginx.pid)
    old = children(master) if master is not None else frozenset()
    reload = reload_nginx(nginx, binary)
    if not reload.running:
        event(log, logging.WARNING, f"installed; {reload.message}: it starts on the new config")
        return Installed(written, running=False)
    if not reload.ok:
        back = rollback(nginx, binary, written, reload_again=False)
        return Installed(written, "reload", f"reload: {reload.message}", rolled_back=back)
    if nginx.status_listen == "off":
        return Installed(written, reloaded=True, old_workers=old)
    seen = confirm_generation(nginx.status_listen, generation, timeout, clock)
    if seen.ok:
        return Installed(written, reloaded=True, confirmed=True, old_workers=old)
    back = rollback(nginx, binary, written, reload_again=True)
    why = (
        f"nginx did not serve generation {generation} within {timeout:g}s "
        f"(its status listener answered {seen.seen or 'nothing'})"
    )
    return Installed(written, "confirm", why, reloaded=True, rolled_back=back)


def rollback(
    nginx: NginxSpec, binary: Binary | None, written: WriteResult | None, *, reload_again: bool
) -> bool:
    """Leave on disk exactly what was there before this install: the old bytes, or no
    file when there was none (the next nginx start must not pick up a config that
    failed), then reload nginx onto the old bytes if it was reloaded onto the new.
    Returns whether anything was put back."""
    if written is None or not written.changed:
        what = f"{nginx.output} held this config before this apply; left as it was"
        event(log, logging.ERROR, what)
        return False
    try:
        what = restore_previous(written)
    except InstallError as exc:
        event(log, logging.ERROR, f"rollback failed: {exc}")
        return False
    if reload_again and written.previous is not None:
        again = reload_nginx(nginx, binary)
        event(log, logging.ERROR, what, reload=again.message)
    else:
        event(log, logging.ERROR, what)
    return True
