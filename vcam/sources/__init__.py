"""Frame sources: webcam, looping video file, deterministic synthetic scene."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from vcam.config import SourceConfig


class FrameSource(Protocol):
    status: dict

    def read(self) -> np.ndarray | None:
        """The next RGB frame, or None when none is available right now."""

    def close(self) -> None: ...


class SyntheticSource:
    """`SyntheticScene` as a source: frame i on the i-th read."""

    def __init__(self, width: int, height: int, dynamic_fraction: float, seed: int):
        from vcam.sources.synthetic import SyntheticScene

        self.scene = SyntheticScene(width, height, dynamic_fraction, seed)
        self._i = 0
        self.status: dict = {"connected": True, "error": None}

    def read(self) -> np.ndarray:
        frame = self.scene.frame(self._i)
        self._i += 1
        return frame

    def close(self) -> None:
        pass


def open_source(cfg: SourceConfig) -> FrameSource:
    if cfg.kind == "synthetic":
        return SyntheticSource(cfg.capture_width, cfg.capture_height, cfg.dynamic_fraction, cfg.seed)
    if cfg.kind == "webcam":
        from vcam.sources.webcam import WebcamSource

        return WebcamSource(cfg.webcam, cfg.capture_width, cfg.capture_height, cfg.fps)
    from vcam.sources.video_file import VideoFileSource

    assert cfg.path is not None  # the config validator requires it
    return VideoFileSource(cfg.path)
