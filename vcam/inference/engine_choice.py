"""Engine choice for the inference process: which engine `engine.name = "auto"` means on this machine,
and the options `engine.create_engine` gets from the daemon's config."""
from __future__ import annotations

from pathlib import Path

from engine.options import EngineOptions, ModelOptions


def has_klein(models_dir: Path, model: str) -> bool:
    """Whether engine.model resolves to a complete klein folder here (for engine = "auto")."""
    from engine.errors import EngineConfigError
    from engine.flux2.loader import validate

    try:
        validate(model, models_dir)
        return True
    except EngineConfigError:
        return False


def auto_engine(engine_cfg) -> tuple[str, str]:
    """(engine name, why) for engine.name = "auto": flux2 with CUDA and weights, else flux2-tiny."""
    if engine_cfg.name != "auto":
        return engine_cfg.name, "configured"
    import torch

    cuda = engine_cfg.device != "cpu" and torch.cuda.is_available()
    weights = has_klein(engine_cfg.models_dir, engine_cfg.model)
    if cuda and weights:
        return "flux2", f"CUDA and {engine_cfg.model} found"
    from vcam.fallbacks import status_text

    why = "no CUDA device" if not cuda else f"no weights for {engine_cfg.model} (fluxrt-cam models download klein-4b)"
    return "flux2-tiny", status_text("auto_engine", why=why)  # the fallback policy's row and wording


def engine_options(cfg) -> EngineOptions:
    """create_engine's options from a vcam Config (engine section + spatial-cache settings). The config's
    sections are the engine's own option types and were validated when the config loaded: not again here."""
    fields = {k: getattr(cfg.engine, k) for k in ModelOptions.model_fields}
    return EngineOptions.model_construct(**fields, cache=cfg.cache)
