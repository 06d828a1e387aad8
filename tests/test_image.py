"""engine.image: the one crop / pad + resize and the one PSNR the engine, its tools and the camera app use."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.image import cover_resize, fit_frame, psnr


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


def _marked(width: int, height: int) -> np.ndarray:
    """A grey picture with a white centre square and a red left / blue right edge column (both 1/16 of the width)."""
    img = np.full((height, width, 3), 100, np.uint8)
    s, e = min(width, height) // 8, max(1, width // 16)
    img[height // 2 - s:height // 2 + s, width // 2 - s:width // 2 + s] = 255
    img[:, :e] = (255, 0, 0)
    img[:, -e:] = (0, 0, 255)
    return img


def _centre(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2]


def test_crop_fills_the_frame_and_keeps_the_centre():
    portrait = fit_frame(_marked(1280, 720), 90, 160, "crop")  # landscape -> portrait: the sides are cut
    assert portrait.shape == (160, 90, 3) and portrait.flags.c_contiguous
    assert (_centre(portrait) == 255).all()
    assert not (portrait == (255, 0, 0)).all(axis=2).any() and not (portrait == (0, 0, 255)).all(axis=2).any()
    assert (portrait[0] == 100).all() and (portrait[-1] == 100).all()  # no bars: grey from top to bottom
    landscape = fit_frame(_marked(720, 1280), 320, 180, "crop")  # portrait -> landscape: top and bottom are cut
    assert landscape.shape == (180, 320, 3) and (_centre(landscape) == 255).all()
    assert (landscape[:, 0] == (255, 0, 0)).all() and (landscape[:, -1] == (0, 0, 255)).all()  # full width kept
    assert cover_resize(_marked(720, 1280), 320, 180).tolist() == landscape.tolist()  # cover_resize is crop


def test_pad_shows_the_whole_picture_between_black_bars():
    portrait = fit_frame(_marked(1280, 720), 360, 640, "pad")  # landscape -> portrait: bars above and below
    assert portrait.shape == (640, 360, 3)
    top, bottom = 219, 421  # the picture is 360 x 202 (720 * 360 / 1280 = 202.5), centred
    assert (portrait[:top] == 0).all() and (portrait[bottom + 1:] == 0).all()
    picture = portrait[top + 1:bottom - 1]
    assert (picture != 0).any(axis=2).all()  # no black inside the picture
    assert (picture[:, 0] == (255, 0, 0)).all() and (picture[:, -1] == (0, 0, 255)).all()  # both edges survive
    assert (_centre(portrait) == 255).all()
    landscape = fit_frame(_marked(720, 1280), 320, 180, "pad")  # portrait -> landscape: bars left and right
    left = 109  # the picture is 101 x 180 (720 * 180 / 1280 = 101.25), centred
    assert landscape.shape == (180, 320, 3)
    assert (landscape[:, :left] == 0).all() and (landscape[:, 320 - left:] == 0).all()
    assert (landscape[:, left + 1:320 - left - 1] != 0).any(axis=2).all()
    assert (_centre(landscape) == 255).all()


def test_fit_frame_same_size_unknown_fit_and_enlarging():
    same = np.zeros((90, 160, 3), np.uint8)
    assert fit_frame(same, 160, 90, "pad") is same and fit_frame(same, 160, 90, "crop") is same  # no copy
    with pytest.raises(ValueError, match="fit = 'stretch'"):
        fit_frame(same, 320, 180, "stretch")  # type: ignore[arg-type]
    # enlarging interpolates (an engine frame up to the camera): a 64-step ramp becomes more than 64 levels,
    # where repeating pixels (INTER_AREA / nearest when enlarging) would keep exactly 64
    ramp = np.repeat(np.repeat((np.arange(64) * 4).astype(np.uint8)[None, :, None], 36, 0), 3, 2)
    big = fit_frame(ramp, 256, 144)
    assert len(np.unique(big[72, :, 0])) > 64
