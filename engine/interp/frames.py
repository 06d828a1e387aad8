"""Input checks and conversions shared by the interpolators (numpy uint8 frames and torch tensors)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_timesteps(ts: Sequence[float]) -> list[float]:
    """Every t must lie strictly between 0 (frame a) and 1 (frame b)."""
    out = [float(t) for t in ts]
    bad = [t for t in out if not (0.0 < t < 1.0)]
    if bad:
        raise ValueError(f"timesteps must lie strictly between 0 and 1 (0 is frame a, 1 is frame b), got {bad}; "
                         "use engine.interp.base.timesteps(factor) for i/factor")
    return out


def check_pair(a: Any, b: Any) -> tuple[int, int]:
    """Two frames of the same (H, W, 3) shape; returns (H, W). Arrays must be uint8; tensors see rife.py."""
    for name, x in (("a", a), ("b", b)):
        shape = tuple(x.shape)
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"frame {name} must be RGB (H, W, 3), got shape {shape}")
        if shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"frame {name} is empty: shape {shape}")
        if isinstance(x, np.ndarray) and x.dtype != np.uint8:
            raise ValueError(f"frame {name} must be uint8 (0-255), got {x.dtype}; convert with "
                             "np.clip(np.rint(x), 0, 255).astype(np.uint8)")
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"frames a and b must have the same size, got {tuple(a.shape)} and {tuple(b.shape)}; "
                         "resize both to the engine's output size first")
    return int(a.shape[0]), int(a.shape[1])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image on the 0-255 scale -> uint8 by rounding (truncation would cost ~1 dB)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
