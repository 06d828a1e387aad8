"""What the webcam and video-file sources share: an OpenCV capture that may be closed and reopened, and
retried after a doubling delay when it fails.

A broken file or an absent camera is not reopened on every read: each open of a corrupt mp4 made ffmpeg
print a line ("moov atom not found") ~20 times a second, forever. Now a failing capture waits
`Backoff` delays between tries, and ffmpeg's and OpenCV's own logging is quiet, because the source
reports the problem itself (status["error"], logged by the capture thread, shown on the status card).
"""
from __future__ import annotations

import os
import time
from typing import Any

import cv2

from vcam.backoff import Backoff

# A value the user set is kept: it is how one debugs a file or camera OpenCV cannot read
# (OPENCV_FFMPEG_LOGLEVEL=32 shows ffmpeg's reasons, OPENCV_LOG_LEVEL=INFO OpenCV's).
# OpenCV reads this one when its ffmpeg backend starts (the first capture opened), so now is early enough.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
# OPENCV_LOG_LEVEL is read once, early (setting it after `import cv2` is too late): set the level itself,
# errors only, which drops the two WARN lines per failed open of a camera
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class OpenCvSource:
    """Base of the OpenCV sources; subclasses set `status` (with "connected" and "error") and open `_cap`."""

    _cap: Any = None
    status: dict[str, Any]

    def __init__(self, backoff_initial: float, backoff_max: float) -> None:
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._next_try = 0.0

    def _waiting(self) -> bool:
        """True while a failed capture's retry delay runs: read() then returns None without touching it."""
        return time.monotonic() < self._next_try

    def _fail(self, message: str) -> None:
        """Close the capture, report `message`, and retry only after the next backoff delay."""
        self._release()
        self.status.update(connected=False, error=message)
        self._next_try = time.monotonic() + self._backoff.next()

    def _opened(self) -> None:
        """The capture works again: the next failure is retried quickly."""
        self._backoff.reset()
        self.status.update(connected=True, error=None)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._release()
