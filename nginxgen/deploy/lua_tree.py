"""The Lua modules a config needs, installed next to it, so nginx reads them from there.

In a two-container pod nginx cannot see nginxgen's site-packages, so a config whose
`lua_package_path` points into them fails at start (`module 'nginxgen.metrics' not
found`). `install_lua` copies the package's `lua/` tree into `<confdir>/nginxgen-lua/
<version>-<hash>/`, the directory tree the config is written to (and the one a shared
volume carries). A tree is written under a temporary name and renamed into place, so a
reader sees a whole tree or none; a version directory never changes after that, so
installing one changes nothing nginx runs until a config that names it is installed.
Older versions are pruned, keeping the newest few: workers of the config before an
upgrade may still load a module lazily from theirs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from .. import __version__
from ..util.atomic_write import InstallError
from ..util.resources import resource_dir

LUA_TREE = "nginxgen-lua"
KEEP_VERSIONS = 3  # the current one and the two before it
STALE_TEMP_SECONDS = 3600  # a temporary tree this old was left by a killed process


def tree_version(source: Path | None = None) -> str:
    """`<nginxgen version>-<hash of the Lua files>`: a changed file gets a new directory."""
    source = source or resource_dir("lua")
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*.lua")):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"{__version__}-{digest.hexdigest()[:12]}"


def lua_tree_dir(conf_dir: Path, source: Path | None = None) -> Path:
    """Where `install_lua` puts the tree for a config written in `conf_dir`."""
    return conf_dir / LUA_TREE / tree_version(source)


def install_lua(conf_dir: Path, source: Path | None = None) -> Path:
    """The installed tree's directory (for `lua_package_path`), installing it if absent.

    World-readable (0755/0644): nginx workers often run as `nobody`. Raises
    InstallError (one sentence) when the directory cannot be written."""
    source = source or resource_dir("lua")
    target = lua_tree_dir(conf_dir, source)
    if target.is_dir():
        return target
    try:
        return _install(source, target)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise InstallError(
            f"cannot write {target.parent} (the Lua modules the config needs): {why}", exc.errno
        ) from None


def _install(source: Path, target: Path) -> Path:
    root = target.parent
    root.mkdir(mode=0o755, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _copy(source, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not another process that was faster
                raise
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    prune(root, target)
    return target


def prune(root: Path, current: Path, keep: int = KEEP_VERSIONS) -> list[Path]:
    """Remove version directories beyond the `keep` newest (never `current`), and
    temporary trees a killed install left behind. Returns what was removed."""
    now = time.time()
    versions, removed = [], []
    for entry in root.iterdir():
        if not entry.is_dir() or entry.is_symlink():
            continue
        if entry.name.startswith(".tmp-"):
            if now - entry.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        elif entry != current:
            versions.append(entry)
    versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in versions[keep - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def _copy(source: Path, dest: Path) -> None:
    os.chmod(dest, 0o755)  # mkdtemp makes it 0700
    for path in sorted(source.rglob("*.lua")):
        out = dest / path.relative_to(source)
        out.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with open(out, "wb") as fh:
            fh.write(path.read_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(out, 0o644)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
