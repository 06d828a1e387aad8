"""The engine interface: frames in, frames out.

An engine edits one RGB uint8 frame (H, W, 3) at a time and returns an `EditResult` whose frame stays
on the engine's device (the caller decides when, and where to, copy it to the host). It never touches
processes, sockets or config files; the daemon (vcam) drives it from the inference process.

torch is imported lazily here, so `import engine` (e.g. for its option types) stays cheap.
"""
from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass
class EngineStats:
    """Per-edit measurements; `stages_ms` keys are stage names (prepare / denoise / decode ...)."""

    stages_ms: dict[str, float] = field(default_factory=dict)
    # spatial-cache figures for the last frame (empty for engines without a cache)
    cache: dict[str, float] = field(default_factory=dict)


@dataclass
class EditResult:
    """What one `edit()` produced."""

    frame: torch.Tensor  # (H, W, 3) uint8 RGB on the engine's device
    # bool (H/16, W/16): the token cells the spatial cache recomputed; None without a spatial cache
    mask: np.ndarray | None = None
    stats: EngineStats = field(default_factory=EngineStats)

    def numpy(self) -> np.ndarray:
        """The frame as a host array: a view on the CPU, one device -> host copy on a GPU."""
        return self.frame.cpu().numpy()


def check_rgb_frame(frame: Any) -> None:
    """A uint8 (H, W, 3) numpy frame, or a clear error saying what came instead."""
    from engine.errors import EngineConfigError

    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise EngineConfigError(f"expected an RGB uint8 (H, W, 3) numpy frame, got {desc}")


class Engine(abc.ABC):
    """Edits frames. Subclasses set `name` and implement `edit`.

    Live changes between frames (`configure_cache`, `set_style_reference`) are part of the interface.
    The base versions accept and ignore them: an engine without a spatial cache computes every cell
    anyway (the cache only saves work, it never changes what a frame means), and an engine that does
    not edit (passthrough) has no use for a style. Engines that have these features override them.
    """

    name: str = "engine"
    # called between the steps of a long edit (a host process's heartbeat: vcam's watchdog tells a slow
    # frame from a hung one by it); None: nobody listens
    on_progress: Callable[[], None] | None = None

    def __init__(self, device: str | torch.device = "cpu") -> None:
        import torch

        self.device: torch.device = torch.device(device)  # where `edit` leaves its frames
        self.stats = EngineStats()

    @abc.abstractmethod
    def edit(self, frame: np.ndarray, *, prompt: str, seed: int | None = None,
             steps: int | None = None) -> EditResult:
        """Edit `frame` (uint8 (H, W, 3) RGB numpy); the result's frame has the same size, on `self.device`."""

    def progress(self) -> None:
        """Tell `on_progress` a long edit is moving (between its stages and steps)."""
        if self.on_progress is not None:
            self.on_progress()

    def configure_cache(self, options: Any) -> None:
        """New spatial-cache settings; engines without a cache ignore them (see the class note)."""

    def set_style_reference(self, ref: Any) -> None:
        """Another style reference image (or None); engines without style references ignore it."""

    def close(self) -> None:
        """Release device memory; the engine is not used afterwards."""


class PassthroughEngine(Engine):
    """Returns the frame unchanged: the daemon's trivial engine, for tests and for `passthrough` mode."""

    name = "passthrough"

    def edit(self, frame: np.ndarray, *, prompt: str, seed: int | None = None,
             steps: int | None = None) -> EditResult:
        import torch

        check_rgb_frame(frame)
        self.stats = EngineStats(stages_ms={"prepare": 0.0, "denoise": 0.0, "decode": 0.0})
        # torch refuses to share read-only memory (frames straight from shared memory): copy those
        src = frame if frame.flags.writeable else frame.copy()
        return EditResult(torch.from_numpy(src), None, self.stats)  # no copy on the CPU
