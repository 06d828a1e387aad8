"""Video file source, looped. A file that cannot be read is reported and retried like a webcam."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vcam.sources.opencv_capture import OpenCvSource


class VideoFileSource(OpenCvSource):
    def __init__(self, path: Path):
        self.path = Path(path).expanduser()
        self.status: dict[str, object] = {"connected": False, "error": None, "loops": 0}
        self.native_fps: float | None = None

    def _open(self) -> bool:
        if not self.path.is_file():
            self.status.update(connected=False, error=f"video file {self.path} does not exist; set source.path")
            return False
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            self.status.update(connected=False, error=f"cannot decode {self.path}; convert it to mp4 (H.264)")
            return False
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.native_fps = fps if fps and fps > 0 else None
        self._cap = cap
        self.status.update(connected=True, error=None)
        return True

    def read(self) -> np.ndarray | None:
        if self._cap is None and not self._open():
            return None
        assert self._cap is not None
        ok, frame = self._cap.read()
        if not ok:  # end of file: loop
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self.status["loops"] = int(self.status["loops"]) + 1  # type: ignore[arg-type]
            ok, frame = self._cap.read()
            if not ok:
                self.status.update(connected=False, error=f"{self.path} has no readable frames")
                self._release()
                return None
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
