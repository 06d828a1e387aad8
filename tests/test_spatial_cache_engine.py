"""The spatial cache inside the FLUX.2 engine (flux2-tiny, fp32, CPU), end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import create_engine
from engine.errors import EngineConfigError
from engine.flux2.tiny import ensure_tiny, preset

W, H = 96, 64  # a 6 x 4 token grid
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("torch_one_thread")]


def textured(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def engine(folder, cache=None, **kw):
    return create_engine("flux2-tiny", tiny_dir=folder, width=W, height=H, steps=2, device="cpu", dtype="float32",
                         cache=cache, **kw)


def test_same_frame_twice_is_exact_and_a_prompt_change_reruns_everything(tiny_flux2_dir):
    eng = engine(tiny_flux2_dir)
    assert eng.spatial_cache is not None and eng.cache_settings.enabled
    f = textured()
    r1 = eng.edit(f, prompt="a watercolor painting", seed=0)
    assert r1.stats.cache["dense"] == 1.0 and r1.mask.shape == (H // 16, W // 16) and r1.mask.all()
    first = r1.numpy()
    r2 = eng.edit(f, prompt="a watercolor painting", seed=0)
    assert np.array_equal(first, r2.numpy())
    assert r2.stats.cache["active_fraction"] == 0.0 and r2.stats.cache["flop_ratio"] == 0.0
    assert not r2.mask.any()
    assert r1.mask.all()  # a result keeps its own mask: the next frame does not change it

    r3 = eng.edit(f, prompt="pixel art", seed=0)
    assert r3.stats.cache["dense"] == 1.0 and r3.mask.all() and "prompt" in eng.spatial_cache.last_reason
    other = r3.numpy()
    plain = engine(tiny_flux2_dir, cache={"enabled": False})
    assert plain.spatial_cache is None
    r_plain = plain.edit(f, prompt="pixel art", seed=0)
    assert r_plain.mask is None and r_plain.stats.cache == {}
    assert np.abs(other.astype(int) - r_plain.numpy().astype(int)).max() <= 1
    assert not np.array_equal(other, first)


def test_a_local_change_recomputes_only_its_cells(tiny_flux2_dir):
    eng = engine(tiny_flux2_dir, cache={"halo": 0, "refresh_period": 0})
    f = textured()
    eng.edit(f, prompt="x")
    g = f.copy()
    g[16:32, 32:48] = 255 - g[16:32, 32:48]  # cell (1, 2)
    r = eng.edit(g, prompt="x")
    st = r.stats.cache
    assert st["dense"] == 0.0 and st["changed_cells"] == 1 and r.mask.sum() == 1 and r.mask[1, 2]
    assert st["active_cells"] == r.mask.sum()
    assert 0 < st["flop_ratio"] < 0.5 and st["cache_bytes"] > 0
    # latents of the first frame equal the engine without cache (the dense path is the unpatched model)
    plain = engine(tiny_flux2_dir, cache=False)
    fresh = engine(tiny_flux2_dir)
    a = fresh.raw_latents(fresh.denoise(f, prompt="y", seed=3))
    b = plain.raw_latents(plain.denoise(f, prompt="y", seed=3))
    assert (a - b).abs().max().item() <= 1e-5


def test_the_result_mask_is_exactly_the_cells_whose_latents_were_recomputed(tiny_flux2_dir):
    """Tokens outside the mask come from the cache bit for bit; every cell inside it got new values."""
    eng = engine(tiny_flux2_dir, cache={"halo": 1, "refresh_period": 0})
    f = textured(5)
    eng.edit(f, prompt="x")
    before = eng.denoise(f, prompt="x")  # the same frame again: all served from the cache, f's tokens
    g = f.copy()
    g[16:32, 32:48] = 255 - g[16:32, 32:48]  # cell (1, 2), and its halo around it
    mask = eng.edit(g, prompt="x").mask
    after = eng.denoise(g, prompt="x")  # g's tokens, again from the cache
    changed = (after != before).any(-1).reshape(H // 16, W // 16).numpy()
    assert mask.sum() == 9 and np.array_equal(changed, mask)


def test_kv_model_with_cache_matches_the_uncached_kv_engine(tmp_path_factory):
    folder = ensure_tiny(preset("test", kv=True), folder=tmp_path_factory.mktemp("sc-kv") / "tiny-klein-kv")
    cached, plain = engine(folder), engine(folder, cache=False)
    assert cached.kv and cached.spatial_cache.kv_reference
    f = textured(1)
    a = cached.raw_latents(cached.denoise(f, prompt="a marble statue", seed=2))
    b = plain.raw_latents(plain.denoise(f, prompt="a marble statue", seed=2))
    assert (a - b).abs().max().item() <= 1e-5
    again = cached.raw_latents(cached.denoise(f, prompt="a marble statue", seed=2))
    assert (again - a).abs().max().item() == 0.0


def test_bad_cache_options_are_a_config_error(tiny_flux2_dir):
    with pytest.raises(EngineConfigError, match="unknown spatial cache option"):
        engine(tiny_flux2_dir, cache={"tau": 4.0, "radius": 2})
    with pytest.raises(EngineConfigError, match="rho"):
        engine(tiny_flux2_dir, cache={"rho": 1.5})


def test_live_cache_settings_and_style_reference_changes(tiny_flux2_dir, tmp_path):
    import cv2

    eng = engine(tiny_flux2_dir)
    frame = textured()
    eng.edit(frame, prompt="a")
    first = eng.spatial_cache
    eng.configure_cache(first.settings.model_dump())  # unchanged: the warm cache is kept
    assert eng.spatial_cache is first
    eng.configure_cache({"enabled": True, "tau": 9.0, "halo": 0, "refresh_period": 5, "rho": 0.5})
    assert eng.spatial_cache is not first and eng.spatial_cache.settings.tau == 9.0
    eng.edit(frame, prompt="a")
    assert eng.stats.cache["dense"] == 1.0 and eng.spatial_cache.last_reason == "first frame"  # a fresh cache
    g = frame.copy()
    g[16:32, 32:48] = 255 - g[16:32, 32:48]  # cell (1, 2): a big change
    g[:16, :16] = np.clip(g[:16, :16].astype(int) + 6, 0, 255)  # cell (0, 0): above the default tau 4, below 9
    r = eng.edit(g, prompt="a")
    st = r.stats.cache
    assert st["dense"] == 0.0 and st["changed_cells"] == 1 and r.mask[1, 2]  # tau 9
    assert st["active_cells"] - st["refreshed_cells"] == 1  # halo 0: the changed cell alone
    assert st["refreshed_cells"] >= 3  # refresh_period 5: a fifth of the 24 cells per frame (30: at most 1)
    eng.configure_cache({"enabled": False})
    assert eng.spatial_cache is None
    r = eng.edit(frame, prompt="a")
    assert r.stats.cache == {} and r.mask is None
    dense = r.numpy()
    with pytest.raises(EngineConfigError, match="tau"):
        eng.configure_cache({"tau": -1})
    style = tmp_path / "style.png"
    cv2.imwrite(str(style), np.full((H, W, 3), 200, np.uint8))
    eng.set_style_reference(style)
    styled = eng.edit(frame, prompt="a").numpy()
    assert not np.array_equal(styled, dense)  # the second reference changes the edit
    eng.set_style_reference(None)
    assert np.array_equal(eng.edit(frame, prompt="a").numpy(), dense)
    with pytest.raises(EngineConfigError, match="not a readable image"):
        eng.set_style_reference(tmp_path / "missing.png")


def test_a_new_style_reference_recomputes_everything(tiny_flux2_dir, tmp_path):
    import cv2

    styles = []
    for i, value in enumerate((40, 220)):
        styles.append(tmp_path / f"style{i}.png")
        cv2.imwrite(str(styles[-1]), np.full((H, W, 3), value, np.uint8))
    eng, f = engine(tiny_flux2_dir, style_reference=styles[0]), textured(3)
    before = eng.raw_latents(eng.denoise(f, prompt="a", seed=1))
    again = eng.raw_latents(eng.denoise(f, prompt="a", seed=1))
    assert eng.spatial_cache.stats["active_fraction"] == 0.0 and torch.equal(again, before)  # warm: nothing to do
    eng.set_style_reference(styles[1])  # same token layout, other image: only the cache key tells them apart
    after = eng.raw_latents(eng.denoise(f, prompt="a", seed=1))
    sc = eng.spatial_cache
    assert sc.stats["dense"] == 1.0 and sc.stats["active_fraction"] == 1.0 and sc.last_reason == "changed: reference"
    plain = engine(tiny_flux2_dir, cache=False, style_reference=styles[1])
    assert (after - plain.raw_latents(plain.denoise(f, prompt="a", seed=1))).abs().max().item() <= 1e-5
    assert (after - before).abs().max().item() > 1e-3  # the style matters, so a stale cache would show
