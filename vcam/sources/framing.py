"""Fit a captured frame to the engine: centre-crop to the engine's aspect, then area-resize."""
from __future__ import annotations

import cv2
import numpy as np


def crop_resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop `frame` (H, W, 3) to width:height and resize to exactly (height, width)."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    target = width / height
    if w / h > target:  # too wide: crop the sides
        cw = max(1, round(h * target))
        x0 = (w - cw) // 2
        frame = frame[:, x0:x0 + cw]
    else:  # too tall: crop top and bottom
        ch = max(1, round(w / target))
        y0 = (h - ch) // 2
        frame = frame[y0:y0 + ch]
    # INTER_AREA averages source pixels when shrinking (no aliasing); it falls back to bilinear-like
    # behaviour when enlarging
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
