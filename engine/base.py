"""The engine interface: frames in, frames out.

An engine edits one RGB uint8 frame (H, W, 3) at a time. It never touches processes, sockets or
config files; the daemon (vcam) drives it from the inference process.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EngineStats:
    """Per-edit measurements; `stages_ms` keys are stage names (prepare / denoise / decode ...)."""

    stages_ms: dict[str, float] = field(default_factory=dict)
    # spatial-cache figures for the last frame (empty for engines without a cache)
    cache: dict[str, float] = field(default_factory=dict)


class Engine(abc.ABC):
    """Edits frames. Subclasses set `name` and implement `edit`."""

    name: str = "engine"

    def __init__(self) -> None:
        self.stats = EngineStats()
        # boolean (H/16, W/16) grid of the cells recomputed for the last frame, when the engine
        # has a spatial cache; the preview can overlay it
        self.last_mask: np.ndarray | None = None

    @abc.abstractmethod
    def edit(self, frame: np.ndarray, *, prompt: str, seed: int | None = None, steps: int | None = None) -> np.ndarray:
        """Return the edited frame: uint8 (H, W, 3) RGB, same size as `frame`."""

    def close(self) -> None:
        """Release device memory; the engine is not used afterwards."""


class PassthroughEngine(Engine):
    """Returns the frame unchanged: the daemon's trivial engine, for tests and for `passthrough` mode."""

    name = "passthrough"

    def edit(self, frame: np.ndarray, *, prompt: str, seed: int | None = None, steps: int | None = None) -> np.ndarray:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}")
        self.stats = EngineStats(stages_ms={"prepare": 0.0, "denoise": 0.0, "decode": 0.0})
        return frame
