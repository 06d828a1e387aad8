"""Video file source, looped. A file that cannot be read is reported and retried like a webcam: after a
doubling delay, not on every read (a file being copied in, or replaced with a good one, is picked up)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vcam.sources.opencv_capture import OpenCvSource


class VideoFileSource(OpenCvSource):
    """`capture_factory` is cv2.VideoCapture (tests pass a double to count the opens)."""

    def __init__(self, path: Path, capture_factory: Callable[..., Any] = cv2.VideoCapture,
                 backoff_initial: float = 0.5, backoff_max: float = 10.0):
        super().__init__(backoff_initial, backoff_max)
        self.path = Path(path).expanduser()
        self._factory = capture_factory
        self.status: dict[str, Any] = {"connected": False, "error": None, "loops": 0}
        self.native_fps: float | None = None

    def _open(self) -> bool:
        if not self.path.is_file():
            self._fail(f"video file {self.path} does not exist; set source.path")
            return False
        cap = self._factory(str(self.path))
        if not cap.isOpened():
            self._fail(f"cannot decode {self.path}; convert it to mp4 (H.264)")
            return False
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = fps if fps and fps > 0 else None
        self._cap = cap
        return True

    def read(self) -> np.ndarray | None:
        if self._cap is None and (self._waiting() or not self._open()):
            return None
        ok, frame = self._cap.read()
        if not ok:  # end of file: loop
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
            if not ok:
                self._fail(f"{self.path} has no readable frames; check the file plays, or convert it to mp4 (H.264)")
                return None
            self.status["loops"] += 1
        self._opened()  # only a decoded frame proves the file good: it may open and then fail to decode
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
