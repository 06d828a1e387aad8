"""FluxRT compute library: engines (passthrough, FLUX.2), spatial cache, frame interpolators.

Usable on its own:

    from engine import create_engine
    eng = create_engine("passthrough")
    out = eng.edit(frame_rgb_uint8, prompt="...")
"""
from engine.base import Engine, EngineStats, PassthroughEngine
from engine.registry import ENGINE_NAMES, create_engine

__all__ = ["Engine", "EngineStats", "PassthroughEngine", "ENGINE_NAMES", "create_engine"]
