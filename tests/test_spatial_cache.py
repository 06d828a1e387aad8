"""Cached forward vs the unpatched FLUX.2 transformer (tiny model, fp32)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_flux2 import (
    Flux2KVAttnProcessor,
    Flux2KVParallelSelfAttnProcessor,
    Flux2Transformer2DModel,
)

from engine.flux2.latents import REFERENCE_T, grid_ids, image_ids
from engine.flux2.text import text_ids
from engine.spatial_cache import CachedFlux2Transformer, TokenLayout, count_flops, plan_flops
from engine.spatial_cache.flops import flop_counter

GH, GW, TEXT, CIN, JOINT = 4, 6, 7, 16, 32
SIGMAS = torch.tensor([1.0, 0.6, 0.3])


def tiny(kv: bool = False, seed: int = 0) -> Flux2Transformer2DModel:
    torch.manual_seed(seed)
    m = Flux2Transformer2DModel(
        patch_size=1, in_channels=CIN, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=JOINT, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    ).eval()
    if kv:  # what Flux2KleinKVPipeline installs
        for b in m.transformer_blocks:
            b.attn.set_processor(Flux2KVAttnProcessor())
        for b in m.single_transformer_blocks:
            b.attn.set_processor(Flux2KVParallelSelfAttnProcessor())
    return m


@pytest.fixture(scope="module")
def model() -> Flux2Transformer2DModel:
    return tiny()


def inputs(layout: TokenLayout, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, layout.cells, CIN, generator=g)
    refs = torch.randn(1, layout.image - layout.cells, CIN, generator=g)
    text = torch.randn(1, layout.text, JOINT, generator=g)
    return noise, refs, text


def stock(model, hs, text, sigma, img_ids, txt_ids, n):
    with torch.no_grad():
        return model(hidden_states=hs, encoder_hidden_states=text, timestep=sigma.reshape(1), img_ids=img_ids,
                     txt_ids=txt_ids, return_dict=False)[0][:, :n]


@pytest.mark.timeout(60)
def test_dense_and_all_rows_equal_unpatched_at_every_step(model):
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1)
    txt_ids, img_ids = text_ids(TEXT), image_ids(GH, GW)
    noise, refs, text = inputs(layout)
    cf = CachedFlux2Transformer(model, layout, steps=3)
    cf.prepare(SIGMAS, txt_ids, img_ids)
    full = cf.plan(None)
    gathered = cf.plan(np.ones(layout.cells, bool), np.ones(layout.side, bool))  # same rows through index gathers
    assert not gathered[0].full and gathered[0].n == layout.length
    x_ref, x_full, x_gat = noise.clone(), noise.clone(), noise.clone()
    for s in range(3):
        ref = stock(model, torch.cat([x_ref, refs], 1), text, SIGMAS[s], img_ids, txt_ids, layout.cells)
        out_full = cf.forward(s, full[s], torch.cat([x_full, refs], 1), text)
        out_gat = cf.forward(s, gathered[s], torch.cat([x_gat, refs], 1), text)
        torch.testing.assert_close(out_full, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(out_gat, ref, atol=1e-5, rtol=0)
        dt = (SIGMAS[s + 1] if s + 1 < 3 else 0.0) - SIGMAS[s]
        x_ref, x_full, x_gat = x_ref + dt * ref, x_full + dt * out_full, x_gat + dt * out_gat


@pytest.mark.timeout(60)
def test_sparse_rows_against_cache_of_same_inputs_reproduce_dense(model):
    """Rows recomputed against K/V cached from the same inputs must give the dense values: checks
    gathers, rotary rows, attention against the cache and the output scatter."""
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1, extra=5)
    txt_ids, img_ids = text_ids(TEXT), image_ids(GH, GW)
    img_ids = torch.cat([img_ids, torch.cartesian_prod(torch.tensor([20]), torch.tensor([0]), torch.arange(5), torch.tensor([0]))])
    noise, refs, text = inputs(layout)
    hs = torch.cat([noise, refs], 1)
    cf = CachedFlux2Transformer(model, layout, steps=1)
    cf.prepare(SIGMAS[:1], txt_ids, img_ids)
    dense = cf.forward(0, cf.plan(None)[0], hs, text)
    torch.testing.assert_close(dense, stock(model, hs, text, SIGMAS[0], img_ids, txt_ids, layout.cells), atol=1e-5, rtol=0)
    rng = np.random.default_rng(0)
    for frac in (0.1, 0.5, 0.9):
        plan = cf.plan(rng.random(layout.cells) < frac, rng.random(layout.side) < 0.5)
        torch.testing.assert_close(cf.forward(0, plan[0], hs, text), dense, atol=1e-5, rtol=0)


@pytest.mark.timeout(60)
def test_bucket_padding_repeats_rows_and_gives_the_same_result(model):
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1)
    txt_ids, img_ids = text_ids(TEXT), image_ids(GH, GW)
    noise, refs, text = inputs(layout)
    hs0 = torch.cat([noise, refs], 1)
    hs1 = torch.cat([noise, refs + torch.linspace(0, 1, layout.cells)[None, :, None]], 1)  # a new frame
    active = np.zeros(layout.cells, bool)
    active[[1, 2, 7, 8, 13]] = True
    side = np.zeros(layout.side, bool)
    side[3] = True
    outs = []
    for buckets in (None, (16, 32, 64)):
        cf = CachedFlux2Transformer(model, layout, steps=1, buckets=buckets)
        cf.prepare(SIGMAS[:1], txt_ids, img_ids)
        cf.forward(0, cf.plan(None)[0], hs0, text)
        plan = cf.plan(active, side)[0]
        if buckets:
            assert plan.n_text == 16 and plan.n_image == 16 and plan.n_noise == 5 and plan.n_ref == 11
        outs.append((cf.forward(0, plan, hs1, text), cf.cache.double_layers[0].k_cache.clone()))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-6, rtol=0)


@pytest.mark.timeout(60)
def test_kv_reference_mode_equals_klein_kv_transformer_and_stays_exact():
    """9B-KV: step 0 extracts the reference K/V (reference rows see only themselves, fixed timestep),
    later steps reuse them. The cached forward reproduces both calls, and a sparse frame whose
    reference did not change keeps the reference path exact."""
    m = tiny(kv=True)
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1, extra=5)
    txt_ids, noise_ids = text_ids(TEXT), image_ids(GH, GW, refs=0)
    ref_ids = torch.cat([grid_ids(GH, GW, REFERENCE_T),
                         torch.cartesian_prod(torch.tensor([20]), torch.tensor([0]), torch.arange(5), torch.tensor([0]))])
    noise, refs, text = inputs(layout)
    cf = CachedFlux2Transformer(m, layout, steps=3, kv_reference=True)
    cf.prepare(SIGMAS, txt_ids, torch.cat([noise_ids, ref_ids]))
    plans = cf.plan(None)
    assert plans[0].n_ref == refs.shape[1] and plans[1].n_ref == 0
    x, xc = noise.clone(), noise.clone()
    outs = []
    with torch.no_grad():
        for s in range(3):
            if s == 0:
                ref, kv = m(hidden_states=torch.cat([refs, x], 1), encoder_hidden_states=text, timestep=SIGMAS[:1],
                            img_ids=torch.cat([ref_ids, noise_ids]), txt_ids=txt_ids, return_dict=False,
                            kv_cache_mode="extract", num_ref_tokens=refs.shape[1])
            else:
                ref = m(hidden_states=x, encoder_hidden_states=text, timestep=SIGMAS[s : s + 1], img_ids=noise_ids,
                        txt_ids=txt_ids, return_dict=False, kv_cache=kv, kv_cache_mode="cached")[0]
            hs = torch.cat([xc, refs], 1) if s == 0 else xc  # later steps need the noise rows only
            out = cf.forward(s, plans[s], hs, text)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
            outs.append(out)
            x, xc = x + 0.3 * ref, xc + 0.3 * out
    # a sparse frame on the same inputs: every step reproduces the dense outputs
    rng = np.random.default_rng(0)
    sparse = cf.plan(rng.random(layout.cells) < 0.3, rng.random(layout.side) < 0.3)
    xc = noise.clone()
    for s in range(3):
        out = cf.forward(s, sparse[s], torch.cat([xc, refs], 1), text)
        torch.testing.assert_close(out, outs[s], atol=1e-5, rtol=0)
        xc = xc + 0.3 * out


def test_flop_counter_counts_cpu_attention_and_matches_the_estimate(model):
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1)
    txt_ids, img_ids = text_ids(TEXT), image_ids(GH, GW)
    noise, refs, text = inputs(layout)
    hs = torch.cat([noise, refs], 1)
    plain = torch.utils.flop_counter.FlopCounterMode(display=False)
    with plain:
        stock(model, hs, text, SIGMAS[0], img_ids, txt_ids, layout.cells)
    counted, _ = count_flops(lambda: stock(model, hs, text, SIGMAS[0], img_ids, txt_ids, layout.cells))
    d, L = 32, layout.length
    attention = 3 * 4 * L * L * d  # 3 blocks, QK^T + AV
    assert counted - plain.get_total_flops() == attention
    cf = CachedFlux2Transformer(model, layout, steps=1)
    cf.prepare(SIGMAS[:1], txt_ids, img_ids)
    for plan in (cf.plan(None)[0], cf.plan(np.arange(layout.cells) % 3 == 0, np.zeros(layout.side, bool))[0]):
        executed, _ = count_flops(lambda: cf.forward(0, plan, hs, text))
        estimate = plan_flops(model, layout, plan)
        assert abs(estimate - executed) <= 0.05 * executed, (estimate, executed)
    assert isinstance(flop_counter(), torch.utils.flop_counter.FlopCounterMode)


def test_bad_inputs_are_rejected_with_a_clear_error(model):
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1)
    txt_ids, img_ids = text_ids(TEXT), image_ids(GH, GW)
    cf = CachedFlux2Transformer(model, layout, steps=2)
    with pytest.raises(RuntimeError, match="prepare"):
        cf.plan(None)
    with pytest.raises(ValueError, match="ids do not match"):
        cf.prepare(SIGMAS[:2], txt_ids, img_ids[:10])
    with pytest.raises(ValueError, match="expected 2 timesteps"):
        cf.prepare(SIGMAS, txt_ids, img_ids)
    cf.prepare(SIGMAS[:2], txt_ids, img_ids)
    with pytest.raises(ValueError, match="active set does not match"):
        cf.plan(np.ones(layout.cells + 1, bool))
    with pytest.raises(ValueError, match="batch size must be 1"):
        cf.forward(0, cf.plan(None)[0], torch.zeros(2, layout.image, CIN), torch.zeros(2, TEXT, JOINT))
    with pytest.raises(ValueError, match="kv_reference needs reference tokens"):
        CachedFlux2Transformer(model, TokenLayout(TEXT, GH, GW, grid_refs=0), steps=1, kv_reference=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kv", [False, True])
def test_klein_4b_shapes_on_meta_device(kv):
    """Real klein-4B shapes (5 + 20 blocks, 24 x 128, joint 7680) at 512x512 editing, on the meta device
    (no memory, no compute): the cached forward runs at full scale, FLOPs follow the active fraction,
    and the cache holds K/V for 2560 rows x 25 blocks per step (~0.8 GB per step in bf16)."""
    with torch.device("meta"):
        m = Flux2Transformer2DModel(
            patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=7680, mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32),
            rope_theta=2000, guidance_embeds=False,
        ).eval()
    m = m.to(torch.bfloat16)
    layout = TokenLayout(512, 32, 32, grid_refs=1)
    txt_ids, img_ids = text_ids(512), image_ids(32, 32)
    cf = CachedFlux2Transformer(m, layout, steps=2, kv_reference=kv)
    cf.prepare(torch.tensor([1.0, 0.5], device="meta"), txt_ids.to("meta"), img_ids.to("meta"))
    assert cf.cache.nbytes() == 2 * 2 * 2560 * 25 * 3072 * 2 + 2 * 1024 * 128 * 2
    hs = torch.empty(1, 2048, 128, device="meta", dtype=torch.bfloat16)
    text = torch.empty(1, 512, 7680, device="meta", dtype=torch.bfloat16)
    dense, out = count_flops(lambda: cf.forward(0, cf.plan(None)[0], hs, text))
    assert out.shape == (1, 1024, 128)
    for frac, bound in ((0.1, 0.2), (0.5, 0.6)):
        active = np.zeros(layout.cells, bool)
        active[: round(frac * layout.cells)] = True
        plans = cf.plan(active, np.zeros(layout.side, bool))
        flops, out = count_flops(lambda: cf.forward(0, plans[0], hs, text))
        assert out.shape == (1, 1024, 128) and flops <= bound * dense
        if kv:  # later steps: no reference rows, their K/V come from step 0
            assert plans[1].n_ref == 0 and cf.forward(1, plans[1], hs[:, :1024], text).shape == (1, 1024, 128)


def test_real_form_rope_equals_complex_rope():
    from engine.spatial_cache.forward import _rope, _rope_real

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 2, 16, generator=g)
    ang = torch.randn(5, 8, generator=g)
    freqs = torch.stack([ang.cos(), ang.sin()], -1)
    torch.testing.assert_close(_rope_real(x, freqs), _rope(x, freqs), atol=1e-6, rtol=0)


@pytest.mark.timeout(300)
def test_compiled_block_code_with_buckets_matches_eager(model):
    """The GPU path (torch.compile + bucketed row counts) run on CPU: same results as eager."""
    layout = TokenLayout(TEXT, GH, GW, grid_refs=1)
    txt_ids, img_ids = text_ids(TEXT), image_ids(GH, GW)
    noise, refs, text = inputs(layout)
    hs0, hs1 = torch.cat([noise, refs], 1), torch.cat([noise, refs.flip(1)], 1)
    rng = np.random.default_rng(0)
    frames = [(rng.random(layout.cells) < f, rng.random(layout.side) < 0.3) for f in (0.2, 0.6, 0.3)]
    results = []
    for compile in (False, True):
        cf = CachedFlux2Transformer(model, layout, steps=1, buckets=(16, 32, 64), compile=compile)
        cf.prepare(SIGMAS[:1], txt_ids, img_ids)
        outs = [cf.forward(0, cf.plan(None)[0], hs0, text)]
        outs += [cf.forward(0, cf.plan(a, s)[0], hs1, text) for a, s in frames]
        results.append(outs)
        if compile:
            assert cf.compile_report == {"double": "compiled", "single": "compiled"}
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
