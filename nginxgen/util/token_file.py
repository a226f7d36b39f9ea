"""A file that holds one bearer token: read like ssh reads a private key.

The agent reads its control token with it (--control-token-file) and the gateway the
token it sends to agents (probe.recovery.token_file): one set of rules, one wording.
"""

from __future__ import annotations

import os
import secrets
import stat

MIN_TOKEN = 16  # characters; `openssl rand -hex 32` gives 64
MAX_TOKEN_FILE = 4096  # bytes


class TokenFileError(Exception):
    """The token file cannot be used; str() is one sentence that names it."""


def read_token(path: str, where: str) -> bytes:
    """The token in `path`. Refused, like ssh refuses a private key others can read: a file
    that is missing, not a regular file, accessible by group or others, or empty.
    `where` starts every message (e.g. "--control-token-file /etc/agent.token")."""
    try:
        # O_NONBLOCK: a FIFO put there by mistake must not hang the agent at start.
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TokenFileError(f"{where}: no such file") from None
    except OSError as exc:
        raise TokenFileError(f"{where}: cannot read: {(exc.strerror or '').lower()}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenFileError(f"{where}: is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise TokenFileError(
                f"{where}: is accessible by group or others (mode {mode:04o}); like ssh with a "
                f"private key, the agent refuses a token others can read: chmod 600 {path}"
            )
        data = os.read(fd, MAX_TOKEN_FILE + 1)
    except OSError as exc:
        raise TokenFileError(f"{where}: cannot read: {(exc.strerror or '').lower()}") from None
    finally:
        os.close(fd)
    token = data.strip()
    if not token:
        raise TokenFileError(f"{where}: is empty")
    if len(data) > MAX_TOKEN_FILE:
        raise TokenFileError(f"{where}: is larger than {MAX_TOKEN_FILE} bytes; it holds one token")
    if any(not 0x21 <= b <= 0x7E for b in token):
        raise TokenFileError(f"{where}: the token must be one word of printable ASCII")
    if len(token) < MIN_TOKEN:
        raise TokenFileError(
            f"{where}: the token has {len(token)} characters; use at least {MIN_TOKEN} "
            f"(e.g. `openssl rand -hex 32 > {path}`)"
        )
    return token


def create_token(path: str) -> bool:
    """Write a new random token to `path` (mode 0600, never over an existing file).
    Returns False when the file appeared meanwhile; OSError when it cannot be made."""
    token = secrets.token_hex(32).encode() + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, token)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True
