"""Image helpers shared by the engine, its tools and the camera app: fit a picture to a size, compare two."""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

Image = Union[np.ndarray, "torch.Tensor"]


def cover_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop `img` (H, W, C) to width:height, then resize to exactly (height, width).

    Nothing is squeezed: the sides (or top and bottom) that do not fit the aspect are cut away.
    """
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    target = width / height
    if w / h > target:  # too wide: crop the sides
        cw = max(1, round(h * target))
        x0 = (w - cw) // 2
        img = img[:, x0:x0 + cw]
    else:  # too tall: crop top and bottom
        ch = max(1, round(w / target))
        y0 = (h - ch) // 2
        img = img[y0:y0 + ch]
    # INTER_AREA averages source pixels when shrinking (no aliasing) and is bilinear-like when enlarging
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def psnr(test: Image, ref: Image, *, data_range: float = 255.0, cap_db: float = 100.0) -> float:
    """PSNR in dB of `test` against `ref` (numpy arrays or torch tensors), capped at `cap_db`: identical
    images (or a zero data range) would be infinitely good, and a finite cap keeps means and JSON usable."""
    from skimage.metrics import peak_signal_noise_ratio  # here: it pulls in scipy, which frame fitting never needs

    a, b = _array(test), _array(ref)
    if data_range <= 0 or np.array_equal(a, b):
        return cap_db
    return min(cap_db, float(peak_signal_noise_ratio(b, a, data_range=data_range)))


def _array(x: Image) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    return x.detach().float().cpu().numpy()  # a torch tensor; float first: bfloat16 has no numpy type
