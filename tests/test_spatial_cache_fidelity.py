"""What the spatial cache costs in fidelity: cached output vs the dense engine on a clip with a moving region.

The clip is a photo (scikit-image's chelsea) with a 32x32 patch of another photo (astronaut) sliding
right 8 px a frame; the cached and the dense (cache off) flux2-tiny engines edit the same frames with
the same prompt and seed. Reported: PSNR of the cached frame against the dense one over the whole frame
and over the cells whose input changed.

What flux2-tiny can and cannot show: its weights are random, so its attention is global (a change
anywhere moves every token about equally) and its output depends on the input only weakly (two
consecutive dense frames are ~71 dB apart). The pixel bounds below therefore only catch gross errors
(a stale or misplaced region, a wrong key); the latent test measures what the cache gets right
relative to the size of the change. Fidelity on a trained model needs real weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from engine import create_engine
from engine.image import psnr

W = H = 128  # an 8 x 8 token grid
CELL = 16
PROMPT, SEED = "a watercolor painting", 0
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("torch_one_thread")]


def clip(n: int = 6, step: int = 8) -> list[np.ndarray]:
    background = data.chelsea()[60:60 + H, 150:150 + W]
    patch = data.astronaut()[100:132, 200:232]  # the face: textured, unlike the background around it
    frames = []
    for k in range(n):
        f = background.copy()
        f[40:72, 16 + step * k:48 + step * k] = patch
        frames.append(f)
    return frames


def changed_cells(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool (H/16, W/16): the cells where the two input frames differ at all."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)
    return diff.reshape(H // CELL, CELL, W // CELL, CELL).max(axis=(1, 3)) > 0


def engines(folder):
    def make(cache):
        return create_engine("flux2-tiny", tiny_dir=folder, width=W, height=H, steps=2, device="cpu",
                             dtype="float32", cache=cache)

    return make(None), make(False)  # the cache's defaults (tau 4, halo 1, refresh every 30 frames) vs dense


def test_cached_frames_stay_close_to_dense_where_a_region_moves(tiny_flux2_dir):
    cached, dense = engines(tiny_flux2_dir)
    frames = clip()
    rows = []
    for k, f in enumerate(frames):
        rc = cached.edit(f, prompt=PROMPT, seed=SEED)
        rd = dense.edit(f, prompt=PROMPT, seed=SEED)
        c, d = rc.numpy(), rd.numpy()
        if k == 0:  # nothing cached yet: the whole frame is computed, exactly as dense
            assert rc.mask is not None and rc.mask.all() and np.array_equal(c, d)
            continue
        cells = changed_cells(frames[k - 1], f)
        # the moving patch's cells (where it left and where it arrived) are recomputed, most others are not
        assert rc.mask is not None and (rc.mask | ~cells).all(), f"frame {k}: changed cells not recomputed"
        assert rc.stats.cache["dense"] == 0.0 and rc.stats.cache["active_fraction"] < 0.6
        px = np.kron(cells, np.ones((CELL, CELL), dtype=bool))
        rows.append((k, psnr(c, d), psnr(c[px], d[px]), rc.stats.cache["active_fraction"]))
    report = "; ".join(f"frame {k}: whole {w:.1f} dB, changed cells {ch:.1f} dB (active {a:.0%})" for k, w, ch, a in rows)
    print(f"cached vs dense PSNR: {report}")
    # measured 70.6-72.5 dB (a few pixels one level apart). On this model a frame under another prompt is
    # ~61 dB from it and one from another seed ~15 dB, so 65 dB catches a wrong key or a corrupted cache; a
    # stale region is not visible in pixels here (consecutive dense frames are ~71 dB apart): see below
    assert min(min(w, ch) for _, w, ch, _ in rows) >= 65.0, f"cached output drifts from dense: {report}"


def test_cache_follows_the_moving_region_in_latent_space(tiny_flux2_dir):
    """Per-cell error of the cached latents against dense, on the cells changed since the first frame,
    compared with the error of a cache that recomputed nothing (it would still show frame 0's result).

    On flux2-tiny the recomputed cells still attend to stale keys and values of the others (random
    weights make attention global), so the cache removes about half of that error (measured: the
    cached error is 0.41-0.66 of the stale one); 0.8 catches a cache that stops following the region."""
    cached, dense = engines(tiny_flux2_dir)
    frames = clip()
    first = None
    ratios = []
    for k, f in enumerate(frames):
        c = cached.denoise(f, prompt=PROMPT, seed=SEED)[0]  # (cells, 128) tokens, row-major over the grid
        d = dense.denoise(f, prompt=PROMPT, seed=SEED)[0]
        if first is None:
            first = d
            assert torch.equal(c, d)
            continue
        cells = torch.from_numpy(changed_cells(frames[0], f)).flatten()
        cached_err = (c - d).norm(dim=-1)[cells].mean().item()
        stale_err = (first - d).norm(dim=-1)[cells].mean().item()
        ratios.append(cached_err / stale_err)
    print("cached / stale latent error on the changed cells per frame: " + ", ".join(f"{r:.2f}" for r in ratios))
    assert max(ratios) <= 0.8, f"the cache does not follow the moving region: cached/stale error {ratios}"
