"""The control API's bearer token: one random secret in a file only the user can read.

The file lives in the user's config directory (`$XDG_CONFIG_HOME/fluxrt/token`, else
`~/.config/fluxrt/token`) unless `control.token_file` names another. It is created with mode 0600
(never readable by other users, even for an instant: `os.open` with the mode, `O_EXCL`) and a file
that others can read is refused rather than trusted. The token's value is never logged.
"""
from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path


class TokenError(RuntimeError):
    """A token file that cannot be used; the message names the file and the fix."""


def default_token_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "fluxrt" / "token"


def token_path(token_file: Path | None) -> Path:
    return Path(token_file).expanduser() if token_file else default_token_path()


def read_token(path: Path) -> str | None:
    """The token stored at `path`, or None when there is no file. Raises TokenError on a bad file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise TokenError(f"token file {path} is not a regular file; remove it and run `fluxrt-cam token`")
    if os.name == "posix" and st.st_mode & 0o077:
        raise TokenError(f"token file {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                         f"run `chmod 600 {path}` or delete it and run `fluxrt-cam token`")
    token = path.read_text().strip()
    if len(token) < 16:
        raise TokenError(f"token file {path} holds no usable token (under 16 characters); "
                         f"delete it and run `fluxrt-cam token`")
    return token


def create_token(path: Path, *, replace: bool = False) -> str:
    """Write a new random token to `path` (mode 0600, parent 0700) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    if replace:
        # write a fresh file next to it, then rename: the old token stays valid until the new one exists
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return token


def ensure_token(path: Path) -> tuple[str, bool]:
    """(token, created): the token at `path`, created first when missing."""
    existing = read_token(path)
    if existing is not None:
        return existing, False
    try:
        return create_token(path), True
    except FileExistsError:  # another process created it between our read and our create
        token = read_token(path)
    if token is None:
        raise TokenError(f"token file {path} vanished while it was being created; run the command again")
    return token, False


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (no timing hint about how much of a guess was right)."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
