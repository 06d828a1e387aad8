"""FluxRT compute library: engines (passthrough, FLUX.2), spatial cache, frame interpolators.

Usable on its own:

    from engine import create_engine
    eng = create_engine("passthrough")
    result = eng.edit(frame_rgb_uint8, prompt="...")   # EditResult: frame tensor on eng.device, mask, stats
    rgb = result.numpy()
"""
from engine.base import EditResult, Engine, EngineStats, PassthroughEngine
from engine.registry import ENGINE_NAMES, create_engine

__all__ = ["EditResult", "Engine", "EngineStats", "PassthroughEngine", "ENGINE_NAMES", "create_engine"]
