"""Frame interpolator interface: two RGB uint8 frames and timesteps in (0, 1) -> in-between frames.

Frames are torch tensors (H, W, 3) uint8 on the device the engine left them on. A device interpolator (RIFE)
returns the in-between frames on that device; a host interpolator (flow, blend) computes on the host and
returns them there (CPU tensors): either way each frame is copied to the host once, at the very end.
torch is imported lazily: building `flow` or `blend` on the CPU does not need it up front.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.interp.frames import check_pair

if TYPE_CHECKING:
    from torch import Tensor


class InterpolatorUnavailable(RuntimeError):
    """The interpolator asked for cannot be built here (no weights, a broken file). The factory raises it
    instead of choosing another method: what stands in is the caller's policy (vcam: flow, and says so)."""

    def __init__(self, method: str, reason: str, fix: str):
        super().__init__(f"{method} unavailable: {reason}. Fix: {fix}")
        self.method, self.reason, self.fix = method, reason, fix


class Interpolator(abc.ABC):
    name: str = "interpolator"

    @abc.abstractmethod
    def interpolate(self, a: Tensor, b: Tensor, ts: Sequence[float]) -> list[Tensor]:
        """Frames at each t in `ts` (0 < t < 1) between `a` (t=0) and `b` (t=1): uint8 (H, W, 3) tensors on
        a's device (device interpolators) or on the CPU (host interpolators, which computed them there)."""

    def interpolate_numpy(self, a: np.ndarray, b: np.ndarray, ts: Sequence[float]) -> list[np.ndarray]:
        """`interpolate` for host arrays (scripts, benchmarks, tests): uint8 (H, W, 3) in and out."""
        import torch

        check_pair(a, b)  # host arrays must be uint8: a float array would read as a [0, 1] tensor in RIFE

        def tensor(x: np.ndarray) -> Tensor:  # torch cannot view read-only or negatively strided arrays
            return torch.from_numpy(x if x.flags.writeable and x.flags.c_contiguous else np.array(x))

        return [f.cpu().numpy() for f in self.interpolate(tensor(a), tensor(b), ts)]


class HostInterpolator(Interpolator):
    """An interpolator that computes on host arrays (OpenCV, numpy). On a CPU tensor `.numpy()` and
    `torch.from_numpy` are views, so the CPU path copies nothing; GPU frames are copied in once, and the
    results stay on the host (the caller's next stop is shared memory: no upload to copy straight back)."""

    def interpolate(self, a: Tensor, b: Tensor, ts: Sequence[float]) -> list[Tensor]:
        import torch

        for name, x in (("a", a), ("b", b)):
            if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
                desc = f"{x.dtype} tensor" if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"frame {name} must be a uint8 (H, W, 3) torch tensor, got a {desc}; wrap a numpy "
                                 f"frame with torch.from_numpy, or call interpolate_numpy")
        frames = self.interpolate_numpy(a.cpu().numpy(), b.cpu().numpy(), ts)
        return [torch.from_numpy(f) for f in frames]

    @abc.abstractmethod
    def interpolate_numpy(self, a: np.ndarray, b: np.ndarray, ts: Sequence[float]) -> list[np.ndarray]:
        """`interpolate` on host arrays: uint8 (H, W, 3) in, uint8 (H, W, 3) out."""


def timesteps(factor: int) -> list[float]:
    """In-between timesteps for an integer factor: i/factor for i = 1 .. factor-1."""
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"interpolation factor must be an integer >= 1, got {factor!r}")
    return [i / factor for i in range(1, factor)]
