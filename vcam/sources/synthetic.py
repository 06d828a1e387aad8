"""A deterministic synthetic scene: a textured object moving over a static textured background.

`dynamic_fraction` is the fraction of the image the moving object covers (0: a still image; 1: the
whole background pans). Frame i is a pure function of (size, fraction, seed, i), so benchmarks and
tests are repeatable. Textures are real photographs shipped with scikit-image.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from engine.image import cover_resize


@lru_cache(maxsize=4)
def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[..., :3])


class SyntheticScene:
    def __init__(self, width: int, height: int, dynamic_fraction: float, seed: int = 0):  # defaults: [source]
        if not 0.0 <= dynamic_fraction <= 1.0:
            raise ValueError(f"dynamic_fraction must be within 0..1, got {dynamic_fraction}")
        self.width, self.height, self.fraction, self.seed = width, height, dynamic_fraction, seed
        rng = np.random.default_rng(seed)
        if dynamic_fraction >= 1.0:
            # a panorama twice as wide as the frame: the view slides over it
            self._panorama = cover_resize(_photo("coffee"), 2 * width, height)
            self._background = None
        else:
            self._background = cover_resize(_photo("astronaut"), width, height)
        side = math.sqrt(dynamic_fraction * width * height)
        self._ow = max(0, min(width, round(side)))
        self._oh = max(0, min(height, round(side)))
        if self._ow and self._oh:
            self._object = cover_resize(_photo("chelsea"), self._ow, self._oh)
        self._phase = rng.uniform(0, 2 * math.pi, size=2)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 (height, width, 3) RGB."""
        w, h = self.width, self.height
        t = index / 30.0  # the scene moves as if shown at 30 fps
        if self._background is None:
            x = int((math.sin(2 * math.pi * 0.05 * t + self._phase[0]) * 0.5 + 0.5) * w)
            return np.ascontiguousarray(self._panorama[:, x:x + w])
        out = self._background.copy()
        if self._ow and self._oh:
            # a smooth Lissajous path inside the frame
            fx = math.sin(2 * math.pi * 0.11 * t + self._phase[0]) * 0.5 + 0.5
            fy = math.sin(2 * math.pi * 0.07 * t + self._phase[1]) * 0.5 + 0.5
            x0, y0 = int(fx * (w - self._ow)), int(fy * (h - self._oh))
            out[y0:y0 + self._oh, x0:x0 + self._ow] = self._object
        return out

