"""Image helpers shared by the engine, its tools and the camera app: fit a picture to a size, compare two."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Union, get_args

import numpy as np

if TYPE_CHECKING:
    import torch

Image = Union[np.ndarray, "torch.Tensor"]
# How a picture of one aspect goes into a frame of another: "crop" fills the frame and cuts the overflow
# (centred); "pad" shows the whole picture, centred, with black bars where it does not reach.
Fit = Literal["crop", "pad"]
FITS: tuple[str, ...] = get_args(Fit)


def fit_frame(img: np.ndarray, width: int, height: int, fit: Fit = "crop") -> np.ndarray:
    """`img` (H, W, C) as exactly (height, width, C), its aspect kept, the way `fit` says. Nothing is squeezed.

    An image already of that size is returned as it is (no copy).
    """
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    if fit == "crop":
        target = width / height
        if w / h > target:  # too wide: crop the sides
            cw = max(1, round(h * target))
            x0 = (w - cw) // 2
            img = img[:, x0:x0 + cw]
        else:  # too tall: crop top and bottom
            ch = max(1, round(w / target))
            y0 = (h - ch) // 2
            img = img[y0:y0 + ch]
        return _resize(img, width, height)
    if fit == "pad":
        scale = min(width / w, height / h)
        fw, fh = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
        out = np.zeros((height, width, *img.shape[2:]), img.dtype)
        x0, y0 = (width - fw) // 2, (height - fh) // 2
        out[y0:y0 + fh, x0:x0 + fw] = _resize(img, fw, fh)
        return out
    raise ValueError(f"fit = {fit!r}: expected one of {', '.join(FITS)}")


def cover_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop `img` (H, W, C) to width:height, then resize to exactly (height, width): `fit_frame` "crop"."""
    return fit_frame(img, width, height, "crop")


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """A new, contiguous (height, width) image (also at the same size: a crop is a strided view of its source).
    Shrinking: INTER_AREA averages the source pixels (no aliasing); enlarging: INTER_AREA would repeat pixels
    like INTER_NEAREST (blocky at 576x320 -> 1280x720), so bilinear."""
    import cv2  # here, not at the top: vcam's config imports `Fit` and must not pay OpenCV's import time

    shrinking = width <= img.shape[1] and height <= img.shape[0]
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


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
