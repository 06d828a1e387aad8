"""Frame interpolator interface: two RGB uint8 frames and timesteps in (0, 1) -> in-between frames."""
from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np


class Interpolator(abc.ABC):
    name: str = "interpolator"

    @abc.abstractmethod
    def interpolate(self, a: np.ndarray, b: np.ndarray, ts: Sequence[float]) -> list[np.ndarray]:
        """Frames at each t in `ts` (0 < t < 1) between `a` (t=0) and `b` (t=1); uint8 (H, W, 3)."""


def timesteps(factor: int) -> list[float]:
    """In-between timesteps for an integer factor: i/factor for i = 1 .. factor-1."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"interpolation factor must be an integer >= 1, got {factor!r}")
    return [i / factor for i in range(1, factor)]
