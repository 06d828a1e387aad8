"""Acceptance of the spatial cache on a tiny FLUX.2 transformer (fp32) driven like an editing engine:
frame -> reference tokens, fixed seeded noise, Euler steps; the cache vs the unpatched transformer."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_flux2 import Flux2Transformer2DModel

from engine.flux2.latents import image_ids
from engine.flux2.tiny import CellTokens
from engine.flux2.text import text_ids
from engine.spatial_cache import CacheKey, CacheOptions, SpatialCache, TokenLayout, flop_counter

CIN, JOINT, TEXT, EXTRA = 16, 32, 16, 6


def _seeded(text: str, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
    return torch.randn(*shape, generator=g)


cell_tokens = CellTokens(CIN)  # reference tokens with the locality of VAE encode + patchify, without a VAE


class ToyEditor:
    """The per-frame work of an editing engine, minus the VAE and text encoder."""

    def __init__(self, model: Flux2Transformer2DModel, settings: CacheOptions | None) -> None:
        self.model = model
        self.cache = SpatialCache(model, settings) if settings is not None else None
        self.velocities: list[torch.Tensor] = []

    def edit(self, frame: np.ndarray, prompt: str = "watercolor", seed: int = 0, steps: int = 2,
             reference: str | None = None) -> torch.Tensor:
        gh, gw = frame.shape[0] // 16, frame.shape[1] // 16
        extra = EXTRA if reference else 0
        layout = TokenLayout(TEXT, gh, gw, grid_refs=1, extra=extra)
        txt_ids, img_ids = text_ids(TEXT), image_ids(gh, gw)
        refs = cell_tokens(frame)
        if reference:  # a fixed style reference: second reference image, T = 20
            refs = torch.cat([refs, _seeded(reference, 1, extra, CIN)], 1)
            style_ids = torch.cartesian_prod(torch.tensor([20]), torch.tensor([0]), torch.arange(extra), torch.tensor([0]))
            img_ids = torch.cat([img_ids, style_ids])
        text = _seeded(prompt, 1, TEXT, JOINT)
        x = _seeded(f"noise{seed}x{gh}x{gw}", 1, layout.cells, CIN)
        sigmas = torch.linspace(1.0, 1.0 / steps, steps)
        if self.cache is not None:
            self.cache.begin_frame(frame, CacheKey(prompt, seed, steps, frame.shape[1], frame.shape[0], reference),
                                   layout=layout, timesteps=sigmas, txt_ids=txt_ids, img_ids=img_ids)
        self.velocities = []
        for s in range(steps):
            hs = torch.cat([x, refs], 1)
            if self.cache is not None:
                v = self.cache.step(s, hs, text)
            else:
                with torch.no_grad():
                    v = self.model(hidden_states=hs, encoder_hidden_states=text, timestep=sigmas[s : s + 1],
                                   img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0][:, : layout.cells]
            self.velocities.append(v)
            x = x + ((sigmas[s + 1] if s + 1 < steps else 0.0) - sigmas[s]) * v
        if self.cache is not None:
            self.cache.end_frame()
        return x


def counted(fn):
    counter = flop_counter()
    with counter:
        out = fn()
    return counter.get_total_flops(), out


@pytest.fixture(scope="module")
def model() -> Flux2Transformer2DModel:
    torch.manual_seed(0)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=CIN, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=JOINT, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    ).eval()


def frame(seed: int = 0, h: int = 128, w: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def changed(f: np.ndarray, cells: list[tuple[int, int]]) -> np.ndarray:
    g = f.copy()
    for r, c in cells:
        g[16 * r : 16 * r + 16, 16 * c : 16 * c + 16] = 255 - g[16 * r : 16 * r + 16, 16 * c : 16 * c + 16]
    return g


def check_equals_unpatched(model, cached: ToyEditor, out: torch.Tensor, f: np.ndarray, **kw) -> None:
    ref = ToyEditor(model, None)
    expected = ref.edit(f, **kw)
    for v_c, v_r in zip(cached.velocities, ref.velocities):  # every step
        torch.testing.assert_close(v_c, v_r, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.timeout(60)
def test_all_active_equals_unpatched_at_every_step_and_same_frame_twice_is_exact_and_free(model):
    ed = ToyEditor(model, CacheOptions())
    f = frame()
    first = ed.edit(f)
    assert ed.cache.stats["dense"] == 1.0 and ed.cache.last_mask.all()
    check_equals_unpatched(model, ed, first, f)
    dense_flops, _ = counted(lambda: ToyEditor(model, None).edit(f))
    flops, second = counted(lambda: ed.edit(f))
    assert torch.equal(second, first)
    assert flops <= 0.05 * dense_flops
    assert ed.cache.stats["active_fraction"] == 0.0 and not ed.cache.last_mask.any()


@pytest.mark.timeout(60)
def test_executed_flops_follow_the_active_fraction(model):
    settings = CacheOptions(halo=0, refresh_period=30)
    f0 = frame()
    dense_flops, _ = counted(lambda: ToyEditor(model, None).edit(f0))
    for cells, bound in (([(1, 1), (1, 2), (5, 5), (6, 2), (3, 7), (7, 0)], 0.20), ([(r, c) for r in range(8) for c in range(4)], 0.60)):
        ed = ToyEditor(model, settings)
        ed.edit(f0)
        flops, out = counted(lambda: ed.edit(changed(f0, cells)))
        st = ed.cache.stats
        assert st["dense"] == 0.0 and st["changed_cells"] == len(cells)
        assert abs(st["active_fraction"] - len(cells) / 64) <= 3 / 64  # + the rolling refresh's few cells
        assert flops <= bound * dense_flops, (len(cells), flops / dense_flops)
        assert abs(st["flop_ratio"] - flops / dense_flops) < 0.05  # the analytic estimate agrees
        assert st["cache_bytes"] > 0 and torch.isfinite(out).all()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("change", ["prompt", "seed", "steps", "resolution", "reference"])
def test_each_key_change_recomputes_everything(model, change):
    ed = ToyEditor(model, CacheOptions())
    f = frame()
    ed.edit(f, reference="style-a")
    ed.edit(f, reference="style-a")
    assert ed.cache.stats["dense"] == 0.0
    kw = {"reference": "style-a"}
    g = f
    if change == "prompt":
        kw["prompt"] = "an oil painting"
    elif change == "seed":
        kw["seed"] = 7
    elif change == "steps":
        kw["steps"] = 3
    elif change == "resolution":
        g = frame(h=96, w=128)
    else:
        kw["reference"] = "style-b"
    out = ed.edit(g, **kw)
    assert ed.cache.stats["dense"] == 1.0 and ed.cache.last_mask.all()
    field = "width" if change == "resolution" and g.shape[1] != f.shape[1] else ("height" if change == "resolution" else change)
    assert field in ed.cache.last_reason
    check_equals_unpatched(model, ed, out, g, **kw)


@pytest.mark.timeout(60)
def test_active_fraction_above_rho_runs_dense(model):
    ed = ToyEditor(model, CacheOptions(rho=0.5))
    f0, f1 = frame(0), frame(1)
    ed.edit(f0)
    out = ed.edit(f1)
    assert ed.cache.stats["dense"] == 1.0 and "rho" in ed.cache.last_reason
    check_equals_unpatched(model, ed, out, f1)
    ed.edit(changed(f1, [(0, 0)]))
    assert ed.cache.stats["dense"] == 0.0


def test_step_without_begin_frame_is_an_error(model):
    sc = SpatialCache(model)
    with pytest.raises(RuntimeError, match="begin_frame"):
        sc.step(0, torch.zeros(1, 4, CIN), torch.zeros(1, TEXT, JOINT))
