"""Optional recording of the output to a video file (OpenCV VideoWriter)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)


class RecorderSink:
    def __init__(self, path: Path, width: int, height: int, fps: float):
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # reported below: the writer cannot open the file either
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self.path), fourcc, fps, (width, height))
        self.status: dict[str, Any] = {"path": str(self.path), "frames": 0, "error": None}
        if not self._writer.isOpened():
            self.status["error"] = f"cannot record to {self.path}; use a .mp4 or .avi path in a writable folder"
            log.warning("%s", self.status["error"])

    def send(self, frame: np.ndarray) -> None:
        if self._writer.isOpened():
            self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            self.status["frames"] += 1

    def close(self) -> None:
        self._writer.release()
