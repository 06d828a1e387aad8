"""Engine factory: name -> Engine. Heavy imports (torch, diffusers) happen only when asked for."""
from __future__ import annotations

from typing import Any

from engine.base import Engine, PassthroughEngine

ENGINE_NAMES = ("passthrough", "flux2", "flux2-tiny")


def create_engine(name: str, **options: Any) -> Engine:
    """Build the engine `name`; `options` are the engine's keyword arguments (see each class)."""
    if name == "passthrough":
        return PassthroughEngine()
    if name in ("flux2", "flux2-tiny"):
        from engine.flux2.engine import create_flux2_engine

        return create_flux2_engine(tiny=(name == "flux2-tiny"), **options)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
