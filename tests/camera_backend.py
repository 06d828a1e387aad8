"""A pyvirtualcam backend for tests: the real `pyvirtualcam.Camera` drives it in the daemon's output
process, and it records every frame it is sent (time, checksum, mean) to the file named by the
environment variable FLUXRT_TEST_CAMERA_LOG. Configure it with
`output.camera_backend = "tests.camera_backend:RecordingBackend"`."""
from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import numpy as np


class RecordingBackend:
    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object):
        self.width, self.height = width, height
        self._log = open(os.environ["FLUXRT_TEST_CAMERA_LOG"], "a", buffering=1)
        self._device = device or "recording"

    def send(self, frame: np.ndarray) -> None:
        # frame: the flat RGB buffer pyvirtualcam hands backends
        self._log.write(f"{time.monotonic():.6f} {zlib.crc32(frame.tobytes())} {float(frame.mean()):.3f} {frame.size}\n")

    def close(self) -> None:
        self._log.close()

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


def read_log(path: Path) -> list[tuple[float, int, float, int]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            rows.append((float(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])))
    return rows
