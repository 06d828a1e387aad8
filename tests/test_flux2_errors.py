"""Bad options and inputs: one clear EngineConfigError naming the problem and the fix."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine import create_engine
from engine.errors import EngineConfigError
from engine.flux2 import loader

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("torch_one_thread")]


def _make(tiny_flux2_dir, **kw):
    opts = dict(tiny_dir=tiny_flux2_dir, width=32, height=32, steps=1, device="cpu")
    opts.update(kw)
    return create_engine("flux2-tiny", **opts)


@pytest.mark.parametrize("w,h", [(100, 64), (64, 50), (0, 64), (8, 64)])
def test_resolution_not_multiple_of_16(tiny_flux2_dir, w, h):
    with pytest.raises(EngineConfigError, match="multiple of 16"):
        _make(tiny_flux2_dir, width=w, height=h)


@pytest.mark.parametrize("steps", [0, 9, -1, 2.5])
def test_steps_out_of_range(tiny_flux2_dir, steps):
    with pytest.raises(EngineConfigError, match="1-8"):
        _make(tiny_flux2_dir, steps=steps)


def test_steps_out_of_range_per_frame_keeps_engine_usable(tiny_flux2_dir):
    e = _make(tiny_flux2_dir)
    f = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(EngineConfigError, match="steps = 12"):
        e.edit(f, prompt="x", steps=12)
    assert e.edit(f, prompt="x", steps=1).frame.shape == (32, 32, 3)  # still works afterwards


def test_unknown_attention_backend(tiny_flux2_dir):
    with pytest.raises(EngineConfigError, match=r"unknown attention backend 'warp-drive'.*native"):
        _make(tiny_flux2_dir, attention_backend="warp-drive")


def test_unknown_option_and_vae(tiny_flux2_dir):
    with pytest.raises(EngineConfigError, match="unknown engine option"):
        _make(tiny_flux2_dir, guidance=4.0)
    with pytest.raises(EngineConfigError, match="'full' or 'taef2'"):
        _make(tiny_flux2_dir, vae="sdxl")


def test_frame_mismatch(tiny_flux2_dir):
    e = _make(tiny_flux2_dir)
    with pytest.raises(EngineConfigError, match=r"frame is 48x32 but the engine runs at 32x32.*resize"):
        e.edit(np.zeros((32, 48, 3), np.uint8), prompt="x")
    with pytest.raises(EngineConfigError, match="RGB uint8"):
        e.edit(np.zeros((32, 32, 3), np.float32), prompt="x")
    with pytest.raises(EngineConfigError, match="RGB uint8"):
        e.edit(np.zeros((32, 32), np.uint8), prompt="x")
    # the public denoise (latents only) rejects the same frames
    with pytest.raises(EngineConfigError, match="frame is 48x32"):
        e.denoise(np.zeros((32, 48, 3), np.uint8), prompt="x")
    with pytest.raises(EngineConfigError, match="RGB uint8"):
        e.denoise(np.zeros((32, 32, 3), np.float32), prompt="x")


def test_wrong_folder(tmp_path):
    with pytest.raises(EngineConfigError) as ei:
        create_engine("flux2", model=str(tmp_path / "nowhere"), models_dir=tmp_path, device="cpu")
    msg = str(ei.value)
    assert "not found" in msg and str(tmp_path / "nowhere") in msg


def test_named_model_missing_says_download_command(tmp_path):
    with pytest.raises(EngineConfigError, match=r"fluxrt-cam models download klein-4b"):
        create_engine("flux2", model="FLUX.2-klein-4B", models_dir=tmp_path, device="cpu")


def test_not_a_klein_folder(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(EngineConfigError, match="StableDiffusionPipeline model, not FLUX.2"):
        create_engine("flux2", model=str(tmp_path), device="cpu")


def test_missing_components_listed_in_one_error(tiny_flux2_dir, tmp_path):
    broken = tmp_path / "FLUX.2-klein-4B"
    shutil.copytree(tiny_flux2_dir, broken)
    for f in (broken / "text_encoder").glob("*.safetensors"):
        f.unlink()
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(EngineConfigError) as ei:
        create_engine("flux2", model="FLUX.2-klein-4B", models_dir=tmp_path, device="cpu")
    msg = str(ei.value)
    assert "text_encoder/ weights" in msg and "scheduler/scheduler_config.json" in msg
    assert "fluxrt-cam models download klein-4b" in msg


def test_missing_shard_of_sharded_component(tiny_flux2_dir, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_flux2_dir, broken)
    idx = {"metadata": {}, "weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                          "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    for f in (broken / "transformer").glob("*.safetensors"):
        f.rename(broken / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(idx))
    missing, kv = loader.missing_parts(broken)
    assert missing == ["transformer/diffusion_pytorch_model-00002-of-00002.safetensors"] and not kv


def test_hub_id_not_in_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EngineConfigError, match="local Hugging Face cache"):
        loader.resolve("black-forest-labs/FLUX.2-klein-4B", tmp_path)


def test_bad_device_and_dtype(tiny_flux2_dir):
    with pytest.raises(EngineConfigError, match="dtype"):
        _make(tiny_flux2_dir, dtype="int8")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(EngineConfigError, match="CUDA is not available"):
            _make(tiny_flux2_dir, device="cuda")


def test_hub_id_in_local_cache_loads(tiny_flux2_dir, tmp_path, monkeypatch):
    """A hub id already in the Hugging Face cache resolves offline to its snapshot folder."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--fluxrt--tiny-klein"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_flux2_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert loader.resolve("fluxrt/tiny-klein") == repo / "snapshots" / commit
    e = create_engine("flux2", model="fluxrt/tiny-klein", models_dir=tmp_path, width=32, height=32, steps=1,
                      device="cpu")
    assert e.edit(np.zeros((32, 32, 3), np.uint8), prompt="x").frame.shape == (32, 32, 3)


def test_style_reference_from_file(tiny_flux2_dir, tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    style = (rng.random((64, 48, 3)) * 255).astype(np.uint8)  # another size and aspect: cover-resized
    cv2.imwrite(str(tmp_path / "style.png"), cv2.cvtColor(style, cv2.COLOR_RGB2BGR))
    from_file = _make(tiny_flux2_dir, style_reference=tmp_path / "style.png")
    from engine.image import cover_resize

    from_array = _make(tiny_flux2_dir, style_reference=cover_resize(style, 32, 32))
    f = np.full((32, 32, 3), 128, np.uint8)
    assert np.array_equal(from_file.edit(f, prompt="x").numpy(), from_array.edit(f, prompt="x").numpy())
    with pytest.raises(EngineConfigError, match="not a readable image"):
        _make(tiny_flux2_dir, style_reference=tmp_path / "missing.png")


def test_corrupt_weights_file(tiny_flux2_dir, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_flux2_dir, broken)
    weights = next((broken / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    with pytest.raises(EngineConfigError, match=r"could not load the model.*corrupt"):
        create_engine("flux2", model=str(broken), device="cpu")
