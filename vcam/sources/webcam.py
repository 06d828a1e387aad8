"""Webcam source (OpenCV). A camera that fails or disappears is retried with backoff, never fatal."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from vcam.sources.opencv_capture import OpenCvSource


class WebcamSource(OpenCvSource):
    """Reads RGB frames from a webcam given by index ("0") or device path ("/dev/video2").

    `read()` returns None while the camera is unavailable; `status` says why. Nothing is logged here: the
    capture thread logs each change of status["error"]. `capture_factory` is cv2.VideoCapture (tests pass a double).
    """

    def __init__(self, device: str, width: int, height: int, fps: float,
                 capture_factory: Callable[..., Any] = cv2.VideoCapture,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0):
        super().__init__(backoff_initial, backoff_max)
        self.device: int | str = int(device) if device.isdigit() else device
        self.width, self.height, self.fps = width, height, fps
        self._factory = capture_factory
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
        self._cap = cap
        return True

    def read(self) -> np.ndarray | None:
        if self._cap is None and (self._waiting() or not self._open()):
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._fail(f"webcam {self.device!r} stopped delivering frames (unplugged?)")
            return None
        # only a frame proves the camera back: one that opens and then gives nothing keeps backing off
        if self.status["error"] is not None:
            self.status["reconnects"] += 1
        self._opened()
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
