"""What the webcam and video-file sources share: an OpenCV capture that may be closed and reopened."""
from __future__ import annotations

from typing import Any


class OpenCvSource:
    _cap: Any = None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def close(self) -> None:
        self._release()
