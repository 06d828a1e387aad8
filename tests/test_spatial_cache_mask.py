"""Change mask: threshold against the last computed content, halo, rolling refresh, default tau."""
from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineConfigError
from engine.options import CacheOptions
from engine.spatial_cache import ChangeMask
from engine.spatial_cache.mask import box_blur3, cell_mean, dilate


def textured(h: int = 128, w: int = 192, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def photo_with_moving_object(dx: int) -> np.ndarray:
    """256x256 astronaut photo with a 114x114 crop of chelsea (a fifth of the frame) pasted at x = 40 + dx."""
    from skimage import data

    from engine.image import cover_resize

    f = cover_resize(data.astronaut(), 256, 256).copy()
    f[70:184, 40 + dx:154 + dx] = cover_resize(data.chelsea(), 114, 114)
    return f


def run(mask: ChangeMask, frame: np.ndarray, full: bool = False):
    p = mask.propose(frame)
    mask.commit(p, full=full or p.first)
    return p


def test_identical_frame_recomputes_nothing_and_a_change_is_found_with_its_halo():
    m = ChangeMask(8, 12, side_rows=5, tau=4.0, halo=1, refresh_period=10)
    f0 = textured()
    first = run(m, f0)
    assert first.first and first.active.all() and first.side.all()
    assert not run(m, f0).active.any()
    f1 = f0.copy()
    f1[32:48, 64:80] = 255 - f1[32:48, 64:80]  # exactly cell (2, 4)
    p = m.propose(f1)
    assert p.changed.sum() == 1 and p.changed[2, 4]
    assert (p.active & ~p.refreshed).sum() == 9 and p.active[1:4, 3:6].all()  # the 3x3 halo


def test_difference_is_against_the_content_each_cell_was_last_computed_from():
    m = ChangeMask(8, 12, side_rows=0, tau=4.0, halo=0, refresh_period=0)
    f = textured().astype(np.int16)
    run(m, f.astype(np.uint8))
    # a slow drift of +1.5 per frame in one cell: below tau frame to frame, found once it adds up
    fired = []
    for i in range(1, 6):
        g = f.copy()
        g[0:16, 0:16] = np.clip(g[0:16, 0:16] + int(1.5 * i), 0, 255)
        p = run(m, g.astype(np.uint8))
        fired.append(bool(p.changed[0, 0]))
        if p.changed[0, 0]:
            break
    assert fired[-1] and not any(fired[:-1]) and len(fired) >= 3


def test_rolling_refresh_bounds_staleness_spreads_evenly_and_settles():
    R, gh, gw, side = 6, 8, 12, 14
    m = ChangeMask(gh, gw, side_rows=side, tau=4.0, halo=0, refresh_period=R)
    f0 = textured()
    run(m, f0)
    f1 = f0.copy()
    f1[0:16, 0:16] = 0  # one cell changes: every other row is now stale
    p = run(m, f1)
    last = np.where(p.active, 1, -1)
    side_last = np.where(p.side, 1, -1)
    per_frame = [int(p.refreshed.sum())]
    for frame in range(2, 2 + R):
        p = run(m, f1)
        assert not p.changed.any()
        last[p.active] = frame
        side_last[p.side] = frame
        per_frame.append(int(p.refreshed.sum()))
    assert (last > 0).all() and (side_last > 0).all()  # every stale row recomputed within R frames
    assert max(per_frame) <= int(np.ceil(gh * gw / R))  # spread evenly: no full-cost frame
    assert not run(m, f1).active.any()  # then the still scene costs nothing


def test_default_tau_ignores_sensor_noise_and_keeps_motion():
    """Why tau = 4 (0-255 scale, after the 3x3 blur): Gaussian sensor noise of sigma 8 on a still
    scene stays below it (measured max ~3.5 per cell), while every cell the moving object touches
    is active (changed, or in the halo of a changed cell)."""
    s = CacheOptions()
    rng = np.random.default_rng(0)
    f0, f1 = photo_with_moving_object(0), photo_with_moving_object(6)  # a 114-px object moves 6 px

    def noisy(f, sigma):
        return np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8)

    still = ChangeMask(16, 16, 0, tau=s.tau, halo=s.halo, refresh_period=s.refresh_period)
    run(still, noisy(f0, 8))
    for _ in range(3):
        assert not run(still, noisy(f0, 8)).changed.any()
    moving = ChangeMask(16, 16, 0, tau=s.tau, halo=s.halo, refresh_period=s.refresh_period)
    run(moving, noisy(f0, 4))
    p = moving.propose(noisy(f1, 4))
    touched = cell_mean(np.abs(f1.astype(np.int16) - f0), 16, 16) > 0
    assert touched.any() and p.active[touched].all()


def test_dilate_is_a_square_of_radius_r():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    assert dilate(m, 2).sum() == 25 and dilate(m, 0).sum() == 1
    edge = np.zeros((3, 3), bool)
    edge[0, 0] = True
    assert dilate(edge, 5).all()


def test_box_blur_replicates_edges_so_a_flat_border_is_not_a_change():
    flat = np.full((32, 32, 3), 200, np.uint8)
    assert np.array_equal(box_blur3(flat), np.full((32, 32, 3), 200, np.float32))
    step = np.zeros((3, 3, 1), np.uint8)
    step[:, 2] = 90  # one bright column at the right edge: the corner sees it twice (replicated)
    assert box_blur3(step)[0, 2, 0] == 60.0 and box_blur3(step)[1, 1, 0] == 30.0


def test_bad_frames_and_settings_are_rejected():
    m = ChangeMask(2, 2, 0, tau=4.0, halo=1, refresh_period=0)
    with pytest.raises(ValueError, match="model resolution"):
        m.propose(np.zeros((31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="model resolution"):
        m.propose(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="tau"):
        CacheOptions(tau=-1)
    with pytest.raises(EngineConfigError, match="halo_cells = 2: unknown spatial cache option"):
        CacheOptions.parse({"tau": 3, "halo_cells": 2})
    assert CacheOptions.parse({"tau": 3.0}).tau == 3.0
    assert CacheOptions.parse(False).enabled is False
