"""Interpolation quality on the synthetic motion set, real RIFE weights through the real loader.

Asserted (mean PSNR over the non-periodic cases at t = 0.5, 256x256): rife-v4.25 >= blend + 8 dB,
rife-v3-hd >= blend + 8 dB, flow >= blend + 5 dB. The periodic case is reported, never asserted.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine.image import psnr
from engine.interp import InterpolatorUnavailable, create_interpolator
from engine.interp.base import timesteps
from engine.interp.motion_set import CASES, asserted_cases, render

SIZE = 256
SHARED = Path(os.environ.get("FLUXRT_SHARED_MODELS") or Path(__file__).resolve().parents[1].parent / "shared" / "models")
needs_weights = pytest.mark.skipif(
    not (SHARED / "rife-v4.25" / "flownet.pkl").is_file() or not (SHARED / "rife-v3-hd" / "flownet.pkl").is_file(),
    reason=f"real RIFE weights not found in {SHARED} (set FLUXRT_SHARED_MODELS or put ../shared/models beside the checkout)")


@pytest.fixture(scope="module")
def scenes():
    """(case, frame at t=0, true frame at t=0.5, frame at t=1) for every case, rendered once."""
    return [(c, render(c, 0.0, SIZE), render(c, 0.5, SIZE), render(c, 1.0, SIZE)) for c in CASES]


@pytest.fixture(scope="module")
def interpolators():
    out = {}
    for method in ("rife-v4.25", "rife-v3-hd", "flow", "blend"):
        try:
            out[method] = (create_interpolator(method, device="cpu", models_dir=Path("/nonexistent-models-dir")), None)
        except InterpolatorUnavailable as e:  # no real weights here: the tests that need them are skipped
            out[method] = (None, str(e))
    return out


@pytest.fixture(scope="module")
def scores(scenes, interpolators):
    """method -> {case name: PSNR at t=0.5}."""
    return {m: {c.name: psnr(interp.interpolate_numpy(a, b, [0.5])[0], truth) for c, a, truth, b in scenes}
            for m, (interp, _) in interpolators.items() if interp is not None}


def _mean(per_case: dict[str, float]) -> float:
    return float(np.mean([per_case[c.name] for c in asserted_cases()]))


def test_motion_set_covers_the_spec():
    asserted = asserted_cases()
    assert len(asserted) >= 6 and any(c.periodic for c in CASES)
    assert any(c.pan == (0.0, 0.0) and c.sprites for c in asserted), "needs a static-camera case"
    assert any(c.pan != (0.0, 0.0) for c in asserted), "needs a panning case"
    assert any(s.rotate_deg != 0 for c in asserted for s in c.sprites), "needs rotation"
    for c in asserted:
        moves = [float(np.hypot(*s.move)) for s in c.sprites] + ([float(np.hypot(*c.pan))] if c.pan != (0.0, 0.0) else [])
        assert all(4 <= m <= 32 for m in moves), (c.name, moves)
        assert all(abs(s.rotate_deg) <= 6 for s in c.sprites)
        assert c.background not in ("stripes", "checker") and all(s.texture not in ("stripes", "checker") for s in c.sprites)


def test_truth_is_rendered_not_warped(scenes):
    for c, a, truth, b in scenes:
        again = render(c, 0.5, SIZE)
        assert np.array_equal(truth, again), "rendering must be deterministic"
        blend = np.rint((a.astype(np.float64) + b) / 2)
        # the in-between frame differs from both ends and from their cross-fade: real motion
        assert psnr(truth, a) < 35 and psnr(truth, b) < 35 and psnr(truth, blend.astype(np.uint8)) < 35, c.name


@needs_weights
def test_weights_come_from_the_shared_folder(interpolators):
    for method in ("rife-v4.25", "rife-v3-hd"):
        interp, note = interpolators[method]
        assert note is None, note
        assert interp.name == method and interp.source.parent.name == method


@needs_weights
@pytest.mark.timeout(240)
def test_mean_psnr_over_the_motion_set(scores):
    means = {m: _mean(s) for m, s in scores.items()}
    periodic = {m: [s[c.name] for c in CASES if c.periodic] for m, s in scores.items()}
    report = "  ".join(f"{m} {v:.2f} dB (periodic {np.mean(periodic[m]):.2f})" for m, v in means.items())
    print(f"\nmean PSNR over {len(asserted_cases())} cases at {SIZE}x{SIZE}, t=0.5: {report}")
    print(f"rife-v4.25 vs flow: {means['rife-v4.25'] - means['flow']:+.2f} dB; "
          f"rife-v3-hd vs flow: {means['rife-v3-hd'] - means['flow']:+.2f} dB")
    assert means["rife-v4.25"] >= means["blend"] + 8, means
    assert means["rife-v3-hd"] >= means["blend"] + 8, means
    assert means["flow"] >= means["blend"] + 5, means


def test_flow_beats_blend_without_weights(scenes):
    """The no-weights path on its own (runs even where ../shared/models is absent)."""
    from engine.interp.blend import BlendInterpolator
    from engine.interp.flow import FlowInterpolator

    flow, blend = FlowInterpolator(), BlendInterpolator()
    got = {n: np.mean([psnr(i.interpolate_numpy(a, b, [0.5])[0], t) for c, a, t, b in scenes if not c.periodic])
           for n, i in (("flow", flow), ("blend", blend))}
    assert got["flow"] >= got["blend"] + 5, got


@needs_weights
@pytest.mark.timeout(120)
def test_other_timesteps_land_at_the_right_time(interpolators):
    """Factor 4: the frame at t=1/4 matches the scene rendered at 1/4, not at 3/4 (and beats blend)."""
    case = next(c for c in CASES if c.name == "pan-6-object-12")
    a, b = render(case, 0.0, SIZE), render(case, 1.0, SIZE)
    truths = {t: render(case, t, SIZE) for t in timesteps(4)}
    blend = interpolators["blend"][0].interpolate_numpy(a, b, timesteps(4))
    for method in ("rife-v4.25", "rife-v3-hd", "flow"):
        frames = interpolators[method][0].interpolate_numpy(a, b, timesteps(4))
        assert len(frames) == 3
        for (t, truth), out, bl in zip(truths.items(), frames, blend):
            assert out.shape == truth.shape and out.dtype == np.uint8
            assert psnr(out, truth) >= psnr(bl, truth) + 5, (method, t)
            if t != 0.5:
                assert psnr(out, truth) > psnr(out, truths[1 - t]) + 3, (method, t)
