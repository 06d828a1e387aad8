"""One daemon per user: a lock file that names the running daemon (PID, control URL, start time).

The lock is an flock on `<runtime dir>/daemon.lock`, held for the daemon's lifetime: the kernel drops it
when the process ends however it ends (kill -9 included), so a stale file never blocks a start. A second
`fluxrt-cam run` reads who holds it and refuses at once, before importing torch or building anything.
The runtime dir is $FLUXRT_RUNTIME_DIR, else $XDG_RUNTIME_DIR/fluxrt, else ~/.cache/fluxrt.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any


def runtime_dir() -> Path:
    if os.environ.get("FLUXRT_RUNTIME_DIR"):
        return Path(os.environ["FLUXRT_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "fluxrt"
    return Path("~/.cache/fluxrt").expanduser()


class AlreadyRunning(RuntimeError):
    """Another daemon of this user holds the lock; `holder` is what it wrote (may be empty)."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path, self.holder = path, holder
        pid = holder.get("pid", "?")
        where = f", control {holder['control_url']}" if holder.get("control_url") else ""
        since = f", started {holder['started']}" if holder.get("started") else ""
        super().__init__(f"another FluxRT Camera daemon is running (PID {pid}{where}{since}); stop it first "
                         f"(Ctrl-C in its terminal, or `kill {pid}`). Lock file: {path}")


class InstanceLock:
    def __init__(self, path: Path | None = None):
        self.path = path or runtime_dir() / "daemon.lock"
        self._fd: int | None = None

    def acquire(self, **info: Any) -> "InstanceLock":
        """Take the lock and write `info` (plus our PID) into it; AlreadyRunning if another daemon holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(self.path, self.read()) from None
        self._fd = fd
        os.ftruncate(fd, 0)  # the previous holder's record is history
        self.update(pid=os.getpid(), **info)
        return self

    def update(self, **info: Any) -> None:
        """Rewrite the holder's record with `info` merged in (e.g. the control URL once the port is known)."""
        assert self._fd is not None, "update() needs the lock"
        record = {**self.read(), **info}
        data = json.dumps(record).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def read(self) -> dict[str, Any]:
        try:
            record = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock; the file stays (harmless, reused by the next start)
            self._fd = None
