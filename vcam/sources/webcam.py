"""Webcam source (OpenCV). A camera that fails or disappears is retried with backoff, never fatal."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from vcam.backoff import Backoff
from vcam.sources.opencv_capture import OpenCvSource

log = logging.getLogger(__name__)


class WebcamSource(OpenCvSource):
    """Reads RGB frames from a webcam given by index ("0") or device path ("/dev/video2").

    `read()` returns None while the camera is unavailable; `status` says why and when the next try
    is. `capture_factory` is cv2.VideoCapture (tests pass a double).
    """

    def __init__(self, device: str, width: int, height: int, fps: float,
                 capture_factory: Callable[..., Any] = cv2.VideoCapture,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0):
        self.device: int | str = int(device) if device.isdigit() else device
        self.width, self.height, self.fps = width, height, fps
        self._factory = capture_factory
        self._cap: Any = None
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._next_try = 0.0
        self.status: dict[str, Any] = {"connected": False, "error": None, "reconnects": 0}

    def _open(self) -> bool:
        cap = self._factory(self.device)
        if not cap or not cap.isOpened():
            self._fail(f"cannot open webcam {self.device!r}; check that it is plugged in and not used "
                       f"by another program (source.webcam = index or /dev/videoN)")
            return False
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # we want the newest frame, not a queue of old ones
        if self.status["error"] is not None:
            self.status["reconnects"] += 1
            log.info("webcam %r is back", self.device)
        self._cap = cap
        self._backoff.reset()
        self.status.update(connected=True, error=None)
        return True

    def _fail(self, message: str) -> None:
        self._release()
        if self.status["error"] != message:
            log.warning("%s (retrying every %.1f-%.0f s)", message, self._backoff.first_s, self._backoff.max_s)
        self.status.update(connected=False, error=message)
        self._next_try = time.monotonic() + self._backoff.next()

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            if time.monotonic() < self._next_try or not self._open():
                return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._fail(f"webcam {self.device!r} stopped delivering frames (unplugged?)")
            return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
