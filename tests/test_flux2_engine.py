"""The serving path equals diffusers' pipelines (tiny model, fp32, CPU), caches what it should, times its stages."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import create_engine
from engine.flux2.engine import Flux2Engine, create_flux2_engine
from engine.flux2.tiny import ensure_tiny, preset

W, H = 96, 64  # 6 x 4 token grid: small, and not square (catches h/w mix-ups)
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("torch_one_thread")]


@pytest.fixture(scope="module")
def tiny_kv_dir(tmp_path_factory):
    return ensure_tiny(preset("test", kv=True), folder=tmp_path_factory.mktemp("flux2kv") / "tiny-klein-kv")


def _frame(seed: int = 0, w: int = W, h: int = H) -> np.ndarray:
    """A smooth natural-ish frame (gradients + a blob), not white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    c = rng.uniform(0.2, 0.8, size=(3, 2))
    img = np.stack([c[i, 0] * xx + c[i, 1] * yy for i in range(3)], -1)
    img += 0.4 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.3) ** 2) / 0.02)[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _engine(folder, **kw) -> Flux2Engine:
    """The dense serving path (spatial cache off: these tests hold the plain loop to the pipeline)."""
    opts = dict(tiny_dir=folder, width=W, height=H, steps=2, device="cpu", dtype="float32", cache={"enabled": False})
    opts.update(kw)
    return create_flux2_engine(tiny=True, **opts)


def _pipeline_latents(pipe, images, prompt, seed, steps, w=W, h=H) -> torch.Tensor:
    out = pipe(image=images, prompt=prompt, height=h, width=w, num_inference_steps=steps,
               generator=torch.Generator().manual_seed(seed), output_type="latent")
    return out.images  # (1, 32, H/8, W/8)


@pytest.fixture(scope="module")
def pipe(tiny_flux2_dir):
    from diffusers import Flux2KleinPipeline

    p = Flux2KleinPipeline.from_pretrained(tiny_flux2_dir)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def eng(tiny_flux2_dir):
    return _engine(tiny_flux2_dir)


@pytest.mark.parametrize("steps,seed,prompt", [(1, 0, "a watercolor painting"), (2, 7, "anime style"),
                                                (4, 123, "cyberpunk city at night, neon lights")])
def test_latents_match_flux2_klein_pipeline(eng, pipe, steps, seed, prompt):
    frame = _frame(seed)
    ours = eng.raw_latents(eng.denoise(frame, prompt=prompt, seed=seed, steps=steps))
    ref = _pipeline_latents(pipe, Image.fromarray(frame), prompt, seed, steps)
    assert ours.shape == ref.shape == (1, 32, H // 8, W // 8)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert ref.abs().mean().item() > 0.1  # not a degenerate all-zero comparison


def test_decoded_frame_matches_pipeline_image(eng, pipe):
    frame = _frame(3)
    ours = eng.edit(frame, prompt="an oil painting", seed=3, steps=2).numpy()
    ref = pipe(image=Image.fromarray(frame), prompt="an oil painting", height=H, width=W, num_inference_steps=2,
               generator=torch.Generator().manual_seed(3), output_type="np").images[0]
    ref_u8 = (ref * 255).round().astype(np.uint8)
    assert ours.dtype == np.uint8 and ours.shape == (H, W, 3)
    assert np.abs(ours.astype(int) - ref_u8.astype(int)).max() <= 1


def test_style_reference_matches_pipeline_with_two_images(tiny_flux2_dir, pipe):
    style = _frame(42)
    eng = _engine(tiny_flux2_dir, style_reference=style)
    frame = _frame(5)
    ours = eng.raw_latents(eng.denoise(frame, prompt="in this style", seed=1, steps=2))
    ref = _pipeline_latents(pipe, [Image.fromarray(frame), Image.fromarray(style)], "in this style", 1, 2)
    assert (ours - ref).abs().max().item() <= 1e-5
    without = _engine(tiny_flux2_dir).raw_latents(_engine(tiny_flux2_dir).denoise(frame, prompt="in this style",
                                                                                    seed=1, steps=2))
    assert (ours - without).abs().max().item() > 1e-4  # the style reference really takes part


def test_kv_model_matches_flux2_klein_kv_pipeline(tiny_kv_dir, tiny_flux2_dir):
    from diffusers import Flux2KleinKVPipeline

    kv_pipe = Flux2KleinKVPipeline.from_pretrained(tiny_kv_dir)
    kv_pipe.set_progress_bar_config(disable=True)
    eng = _engine(tiny_kv_dir)
    assert eng.kv and eng.info["kv"]
    for steps, seed in ((3, 0), (2, 9)):
        frame = _frame(seed)
        ours = eng.raw_latents(eng.denoise(frame, prompt="a marble statue", seed=seed, steps=steps))
        ref = _pipeline_latents(kv_pipe, Image.fromarray(frame), "a marble statue", seed, steps)
        assert (ours - ref).abs().max().item() <= 1e-5
    # same weights served as a plain klein (reference tokens every step) give a different result
    plain = _engine(tiny_flux2_dir)
    frame = _frame(0)
    diff = (plain.raw_latents(plain.denoise(frame, prompt="a marble statue", seed=0, steps=3))
            - eng.raw_latents(eng.denoise(frame, prompt="a marble statue", seed=0, steps=3))).abs().max().item()
    assert diff > 1e-4


def test_repeated_frames_do_not_rerun_text_encoder(tiny_flux2_dir):
    eng = _engine(tiny_flux2_dir)
    forwards = []
    eng.text.text_encoder.register_forward_hook(lambda *a: forwards.append(1))
    for i in range(4):
        eng.edit(_frame(i), prompt="a watercolor painting", seed=0)
    assert len(forwards) == 1 and eng.text.encoder_calls == 1
    eng.edit(_frame(0), prompt="pixel art", seed=0)
    assert len(forwards) == 2
    eng.edit(_frame(1), prompt="a watercolor painting", seed=0)  # still cached (LRU of recent prompts)
    assert len(forwards) == 2


def test_same_inputs_give_the_same_frame_whatever_came_between(eng, pipe):
    """Noise and schedule are prepared once per (steps, seed) and reused: frames edited in between (other
    frames, another seed or step count) leave the next result unchanged, and still the pipeline's."""
    f = _frame(4)
    first = eng.edit(f, prompt="x", seed=11, steps=2).numpy().copy()
    for i, (seed, steps) in enumerate(((11, 2), (12, 2), (11, 3))):
        eng.edit(_frame(i), prompt="x", seed=seed, steps=steps)
    assert np.array_equal(eng.edit(f, prompt="x", seed=11, steps=2).numpy(), first)
    assert not np.array_equal(eng.edit(f, prompt="x", seed=12, steps=2).numpy(), first)
    ours = eng.raw_latents(eng.denoise(f, prompt="x", seed=11, steps=2))
    assert (ours - _pipeline_latents(pipe, Image.fromarray(f), "x", 11, 2)).abs().max().item() <= 1e-5


def test_stats_and_output(eng):
    result = eng.edit(_frame(0), prompt="x", seed=0)
    assert result.frame.device == eng.device and result.mask is None and result.stats is eng.stats
    out = result.numpy()
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert set(eng.stats.stages_ms) == {"prepare", "denoise", "decode"}
    assert all(v > 0 for v in eng.stats.stages_ms.values())
    assert out.std() > 0  # an image, not a constant


def test_registry_builds_flux2_tiny(tiny_flux2_dir):
    e = create_engine("flux2-tiny", tiny_dir=tiny_flux2_dir, width=32, height=48, steps=1, device="auto",
                      dtype="auto", cache={"enabled": True, "tau": 6.0, "halo": 1, "refresh_period": 30, "rho": 0.9})
    assert e.name == "flux2-tiny" and e.info["device"] == "cpu" and e.info["dtype"] == "float32"
    assert e.cache_settings.tau == 6.0
    out = e.edit(_frame(0, 32, 48), prompt="x")
    assert out.frame.shape == (48, 32, 3) and out.mask.shape == (3, 2)
    e.close()


def test_flux2_engine_on_a_model_folder_gives_the_pipeline_image(tiny_flux2_dir, pipe):
    """`flux2` with `model=<a diffusers folder>`: the frame Flux2KleinPipeline makes from that folder."""
    e = create_engine("flux2", model=str(tiny_flux2_dir), width=W, height=H, steps=1, device="cpu",
                      dtype="float32", cache=False)
    f = _frame(0)
    ours = e.edit(f, prompt="x", seed=0).numpy()
    ref = pipe(image=Image.fromarray(f), prompt="x", height=H, width=W, num_inference_steps=1,
               generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert np.abs(ours.astype(int) - (ref * 255).round().astype(int)).max() <= 1


def test_text_encoder_offload_still_gives_the_pipeline_result(tiny_flux2_dir, pipe):
    off = _engine(tiny_flux2_dir, text_encoder_offload=True)
    f = _frame(2)
    for prompt in ("y", "z", "y"):  # encoded, another prompt, then the first again from the prompt cache
        ours = off.raw_latents(off.denoise(f, prompt=prompt, seed=1, steps=2))
        assert (ours - _pipeline_latents(pipe, Image.fromarray(f), prompt, 1, 2)).abs().max().item() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="offloading moves the text encoder off a CUDA device")
def test_text_encoder_offload_frees_device_memory_after_encoding(tiny_flux2_dir):
    off = _engine(tiny_flux2_dir, text_encoder_offload=True, device="cuda")
    off.edit(_frame(2), prompt="y", seed=1)
    assert {p.device.type for p in off.text.text_encoder.parameters()} == {"cpu"}
    kept = _engine(tiny_flux2_dir, device="cuda")
    assert {p.device.type for p in kept.text.text_encoder.parameters()} == {"cuda"}


def test_default_engine_first_frame_matches_pipeline(tiny_flux2_dir, pipe):
    """With the default options (spatial cache on) a first frame is computed densely: still the pipeline's."""
    e = create_flux2_engine(tiny=True, tiny_dir=tiny_flux2_dir, width=W, height=H, steps=2, device="cpu")
    frame = _frame(8)
    ours = e.raw_latents(e.denoise(frame, prompt="a watercolor painting", seed=2, steps=2))
    ref = _pipeline_latents(pipe, Image.fromarray(frame), "a watercolor painting", 2, 2)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_prompt_cache_keeps_the_newest_prompts(tiny_flux2_dir):
    from engine.flux2.loader import load
    from engine.flux2.text import PromptCache

    c = load(tiny_flux2_dir)
    cache = PromptCache(c.text_encoder, c.tokenizer, device=torch.device("cpu"), dtype=torch.float32, capacity=2)
    a, ids = cache.get("a")
    assert a.shape == (1, 512, 3 * 32) and ids.shape == (512, 4) and torch.equal(ids[:, 3], torch.arange(512))
    cache.get("b")
    cache.get("a")  # hit, and "a" becomes the newest
    cache.get("c")  # evicts "b"
    assert cache.encoder_calls == 3
    cache.get("a")
    assert cache.encoder_calls == 3
    cache.get("b")
    assert cache.encoder_calls == 4
    with pytest.raises(TypeError):
        cache.get(None)


def test_engine_seed_option_is_the_default_seed(tiny_flux2_dir, eng):
    f = _frame(5)
    seeded = _engine(tiny_flux2_dir, seed=5).edit(f, prompt="x").numpy()  # no seed given: the engine's seed = 5
    assert np.array_equal(seeded, eng.edit(f, prompt="x", seed=5).numpy())
    assert not np.array_equal(seeded, eng.edit(f, prompt="x").numpy())  # eng's seed is 0

