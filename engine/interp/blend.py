"""The last resort: a cross-fade. No motion, so moving edges ghost; costs well under a millisecond."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.interp.base import HostInterpolator
from engine.interp.frames import check_pair, check_timesteps, to_uint8


class BlendInterpolator(HostInterpolator):
    name = "blend"

    def interpolate_numpy(self, a: np.ndarray, b: np.ndarray, ts: Sequence[float]) -> list[np.ndarray]:
        ts = check_timesteps(ts)
        check_pair(a, b)
        af, bf = a.astype(np.float32), b.astype(np.float32)
        return [to_uint8(af + (bf - af) * t) for t in ts]
