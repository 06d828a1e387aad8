"""TAEF2 with the real weights: strict load, reconstruction quality floors, and use in the FLUX.2 path."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import EngineConfigError
from engine.image import psnr
from engine.taef2 import DECODER_FILE, ENCODER_FILE, TAEF2, find_weights, patchify, unpatchify

SHARED = Path(os.environ.get("FLUXRT_SHARED_MODELS", Path(__file__).resolve().parents[1].parent / "shared" / "models"))
WEIGHTS = SHARED / "taef2"
needs_weights = pytest.mark.skipif(not (WEIGHTS / ENCODER_FILE).is_file(),
                                   reason=f"TAEF2 weights not found in {WEIGHTS} (../shared/models/taef2)")
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("torch_one_thread")]

# encode+decode PSNR (dB) measured here with the real weights, fp32 CPU, output rounded to uint8:
# astronaut 31.18, coffee 29.62, chelsea 32.69, rocket 30.49. Floors sit 0.3 dB below.
PSNR_FLOORS = {"astronaut": 30.9, "coffee": 29.3, "chelsea": 32.4, "rocket": 30.2}


@pytest.fixture(scope="module")
def taef2():
    return TAEF2.from_files(WEIGHTS)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    return np.ascontiguousarray(img[: img.shape[0] // 16 * 16, : img.shape[1] // 16 * 16])


@needs_weights
@pytest.mark.weights
@pytest.mark.parametrize("name", sorted(PSNR_FLOORS))
def test_reconstruction_psnr_floor(taef2, name):
    img = _photo(name)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z = taef2.encode_image(x)
        y = taef2.decode_latents(z)
    assert z.shape == (1, 32, img.shape[0] // 8, img.shape[1] // 8)
    out = (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
    assert psnr(out, img) >= PSNR_FLOORS[name]


@needs_weights
@pytest.mark.weights
def test_flux2_mapping_is_the_same_reconstruction(taef2):
    """[-1, 1] images <-> normalised patchified latents: same numbers as the [0, 1] API."""
    img = _photo("chelsea")
    x01 = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z = taef2.encode(x01 * 2 - 1)
        assert z.shape == (1, 128, img.shape[0] // 16, img.shape[1] // 16)
        assert torch.allclose(unpatchify(z), taef2.encode_image(x01), atol=1e-5)
        y = taef2.decode(z)
    out = ((y / 2 + 0.5).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
    assert psnr(out, img) >= PSNR_FLOORS["chelsea"]


@needs_weights
@pytest.mark.weights
def test_flux2_path_with_taef2_end_to_end(tiny_flux2_dir):
    from engine import create_engine

    img = _photo("astronaut")[::4, ::4][:64, :96]  # 64 x 96 crop of the photo
    img = np.ascontiguousarray(img)
    eng = create_engine("flux2-tiny", tiny_dir=tiny_flux2_dir, width=96, height=64, steps=2, device="cpu",
                        vae="taef2", taef2_path=WEIGHTS)
    assert eng.info["vae"] == "taef2"
    out = eng.edit(img, prompt="a watercolor painting", seed=0).numpy()
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8 and out.std() > 1
    assert set(eng.stats.stages_ms) == {"prepare", "denoise", "decode"}
    # TAEF2 really encodes and decodes the frame: the engine with the full VAE makes another picture
    full = create_engine("flux2-tiny", tiny_dir=tiny_flux2_dir, width=96, height=64, steps=2, device="cpu")
    assert psnr(out, full.edit(img, prompt="a watercolor painting", seed=0).numpy()) < 30


def test_patchify_round_trip():
    z = torch.randn(2, 32, 6, 10)
    p = patchify(z)
    assert p.shape == (2, 128, 3, 5)
    assert torch.equal(unpatchify(p), z)
    assert torch.equal(p[0, :4, 0, 0], z[0, 0, :2, :2].flatten())  # channel c*4 + (dy*2 + dx)


def test_missing_weights_error(tmp_path):
    with pytest.raises(EngineConfigError, match="fluxrt-cam models download taef2"):
        find_weights(tmp_path)


def test_wrong_checkpoint_error(tmp_path):
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / ENCODER_FILE)
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / DECODER_FILE)
    with pytest.raises(EngineConfigError, match="not a TAEF2 checkpoint"):
        TAEF2.from_files(tmp_path)


def test_unreadable_checkpoint_error(tmp_path):
    (tmp_path / ENCODER_FILE).write_bytes(b"\x00garbage, not a torch checkpoint" * 8)
    torch.save({"0.weight": torch.zeros(1)}, tmp_path / DECODER_FILE)
    with pytest.raises(EngineConfigError, match="taef2_encoder.pth is not a readable torch checkpoint") as e:
        TAEF2.from_files(tmp_path)
    assert "fluxrt-cam models download taef2" in str(e.value)


@needs_weights
@pytest.mark.weights
def test_truncated_checkpoint_error(tmp_path):
    for f in (ENCODER_FILE, DECODER_FILE):
        data = (WEIGHTS / f).read_bytes()
        (tmp_path / f).write_bytes(data if f == ENCODER_FILE else data[: len(data) // 2])  # an interrupted download
    with pytest.raises(EngineConfigError, match="taef2_decoder.pth is not a readable torch checkpoint") as e:
        TAEF2.from_files(tmp_path)
    assert "fluxrt-cam models download taef2" in str(e.value)


@needs_weights
@pytest.mark.weights
def test_checkpoint_layout_loads_strictly():
    enc = torch.load(WEIGHTS / ENCODER_FILE, map_location="cpu", weights_only=True)
    dec = torch.load(WEIGHTS / DECODER_FILE, map_location="cpu", weights_only=True)
    m = TAEF2()
    assert set(m.encoder.state_dict()) == set(enc) and set(m.decoder.state_dict()) == set(dec)
    assert sum(p.numel() for p in m.parameters()) > 2_000_000


@needs_weights
@pytest.mark.weights
def test_taef2_found_in_models_dir(tiny_flux2_dir, tmp_path, monkeypatch):
    """`models download taef2` puts the files in <models_dir>/taef2; vae = "taef2" finds them there."""
    from engine import create_engine

    monkeypatch.delenv("FLUXRT_TAEF2", raising=False)
    (tmp_path / "taef2").mkdir()
    for f in (ENCODER_FILE, DECODER_FILE):
        (tmp_path / "taef2" / f).symlink_to(WEIGHTS / f)
    assert find_weights(None, tmp_path) == tmp_path / "taef2"
    eng = create_engine("flux2-tiny", tiny_dir=tiny_flux2_dir, width=32, height=32, steps=1, device="cpu",
                        vae="taef2", models_dir=tmp_path)
    assert eng.edit(np.zeros((32, 32, 3), np.uint8), prompt="x").frame.shape == (32, 32, 3)
