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
        # no mkdir: the config refuses a folder that does not exist (output.record_path), so a typo in the path
        # is an error the user sees, not a new folder tree; if it vanished since, the writer fails and says so
        self.path = Path(path).expanduser()
        fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
        self._writer = cv2.VideoWriter(str(self.path), fourcc, fps, (width, height))
        self.status: dict[str, Any] = {"path": str(self.path), "frames": 0, "error": None}
        if not self._writer.isOpened():
            self.status["error"] = (f"cannot record to {self.path}; use a .mp4 or .avi path in an existing, "
                                    f"writable folder")
            log.warning("%s", self.status["error"])

    def send(self, frame: np.ndarray) -> None:
        if self._writer.isOpened():
            self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            self.status["frames"] += 1

    def close(self) -> None:
        self._writer.release()
