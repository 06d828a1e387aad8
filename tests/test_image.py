"""engine.image: the one centre-crop + resize and the one PSNR the engine, its tools and the camera app use."""
from __future__ import annotations

import math

import numpy as np
import torch

from engine.image import cover_resize, psnr


def test_cover_resize_centre_crops_to_aspect_then_area_resizes():
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, 280:1000] = 200  # the centre square
    out = cover_resize(frame, 512, 512)
    assert out.shape == (512, 512, 3)
    assert out.min() == 200  # the side bands were cropped away, not squeezed in
    tall = np.zeros((1000, 500, 3), np.uint8)
    tall[375:625] = 50  # the centre band that a 2:1 output keeps
    out = cover_resize(tall, 320, 160)
    assert out.shape == (160, 320, 3) and out.min() == 50
    same = np.zeros((32, 48, 3), np.uint8)
    assert cover_resize(same, 48, 32) is same  # already the size: no copy


def test_psnr_is_the_textbook_formula_and_capped():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    test = np.clip(ref.astype(int) + rng.integers(-8, 9, ref.shape), 0, 255).astype(np.uint8)
    mse = np.mean((test.astype(np.float64) - ref) ** 2)
    assert math.isclose(psnr(test, ref), 10 * math.log10(255**2 / mse), rel_tol=1e-9)
    assert psnr(ref, ref) == 100.0 and psnr(ref, ref, cap_db=60.0) == 60.0
    t = torch.linspace(-2, 2, 1000, dtype=torch.bfloat16)  # tensors (bfloat16 too), a range other than 255
    u = t + 0.01
    expected = 10 * math.log10(4.0**2 / float(((u.float() - t.float()) ** 2).mean()))
    assert math.isclose(psnr(u, t, data_range=4.0), expected, rel_tol=1e-5)
    assert psnr(u, t, data_range=0.0) == 100.0  # a flat reference has no range to compare against
