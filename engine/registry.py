"""Engine factory: name -> Engine. Heavy imports (torch, diffusers) happen only when asked for."""
from __future__ import annotations

from typing import Any

from engine.base import Engine, PassthroughEngine

ENGINE_NAMES = ("passthrough", "flux2", "flux2-tiny")


def create_engine(name: str, options: Any = None, /, **kwargs: Any) -> Engine:
    """Build the engine `name`. `options`: an engine.options.EngineOptions (taken as validated) or a dict of
    its fields; keyword arguments are its fields too (plus flux2-tiny's tiny_preset / tiny_dir and the flux2
    engines' on_phase progress callback). The flux2 engines validate them once (EngineConfigError); passthrough
    has no options and ignores them."""
    if name == "passthrough":
        return PassthroughEngine()
    if name in ("flux2", "flux2-tiny"):
        from engine.flux2.engine import create_flux2_engine

        return create_flux2_engine(options, tiny=(name == "flux2-tiny"), **kwargs)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")
