"""Messages between the daemon's processes (pickled over multiprocessing queues)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from engine.options import CacheOptions, InterpolationOptions

Mode = Literal["live", "passthrough", "paused"]


@dataclass(frozen=True)
class Settings:
    """Everything the inference process needs to make a frame; sent whole on every change.

    `prompt_version` increases with every change, so each output frame says which settings made it.
    """

    prompt_version: int
    prompt: str
    seed: int
    steps: int
    mode: Mode = "live"
    preset: str | None = None
    style_reference: str | None = None
    # validated where they were set (config, control API): the inference process takes them as they are
    cache: CacheOptions = field(default_factory=CacheOptions)
    interpolation: InterpolationOptions = field(default_factory=InterpolationOptions)


@dataclass
class ChildStatus:
    """A child's periodic report to the supervisor (its `role` is 'inference' or 'output')."""

    role: str
    ts: float
    values: dict[str, Any] = field(default_factory=dict)
    pid: int = 0  # which process sent it (two output processes run: the serving one and its standby)


@dataclass
class ChildError:
    """Sent by a child just before it dies of an exception (a kill -9 sends nothing)."""

    role: str
    ts: float
    error: str
    traceback: str
    pid: int = 0  # which incarnation of the child died
