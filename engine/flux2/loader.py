"""Find, validate and load a FLUX.2 [klein] model in diffusers layout.

`model` is a folder, a folder name under `models_dir`, or a hub id already in the local Hugging Face cache
(never downloaded here). A missing or incomplete folder gives ONE error that lists everything missing and
the command that gets it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import EngineConfigError
from engine.flux2.catalog import download_hint

PIPELINE_CLASSES = {"Flux2KleinPipeline": False, "Flux2KleinKVPipeline": True}  # class -> uses reference K/V
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt")
_INDEX_GLOBS = ("*.safetensors.index.json", "*.bin.index.json")


@dataclass
class Flux2Components:
    path: Path
    kv: bool  # klein 9B-KV: reference K/V extracted on step 0 and reused
    transformer: Any  # Flux2Transformer2DModel
    vae: Any  # AutoencoderKLFlux2
    text_encoder: Any  # Qwen3ForCausalLM
    tokenizer: Any  # Qwen2TokenizerFast
    scheduler: Any  # FlowMatchEulerDiscreteScheduler


def resolve(model: str | Path, models_dir: Path | None = None) -> Path:
    """The folder `model` names; EngineConfigError naming every place looked at and how to get it."""
    text = str(model)
    looked: list[str] = []
    direct = Path(text).expanduser()
    if direct.is_dir():
        return direct
    looked.append(str(direct))
    if models_dir is not None:
        under = Path(models_dir).expanduser() / text
        if under.is_dir():
            return under
        looked.append(str(under))
    if text.count("/") == 1 and not direct.is_absolute() and not text.startswith("."):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:  # not in the cache (or not a valid id): fall through to the error
            looked.append(f"hub id {text!r} in the local Hugging Face cache")
    raise EngineConfigError(f"model {text!r} not found (looked at: {'; '.join(looked)}); {download_hint(text)}")


def missing_parts(folder: Path) -> tuple[list[str], bool]:
    """What a diffusers FLUX.2 klein folder lacks, and whether it is the KV variant."""
    missing: list[str] = []
    kv = False
    index = folder / "model_index.json"
    if not index.is_file():
        missing.append("model_index.json")
    else:
        try:
            cls = json.loads(index.read_text()).get("_class_name", "")
        except (OSError, json.JSONDecodeError) as e:
            raise EngineConfigError(f"{index} is not valid JSON ({e}); re-download the model") from None
        if cls not in PIPELINE_CLASSES:
            raise EngineConfigError(
                f"{folder} holds a {cls or 'unknown'} model, not FLUX.2 [klein] "
                f"(expected {' or '.join(PIPELINE_CLASSES)}); point engine.model at a klein folder")
        kv = PIPELINE_CLASSES[cls]
    for comp in ("transformer", "vae", "text_encoder"):
        sub = folder / comp
        if not (sub / "config.json").is_file():
            missing.append(f"{comp}/config.json")
        missing += _missing_weights(sub, comp)
    tok = folder / "tokenizer"
    bpe_files = (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
    if not (tok / "tokenizer.json").is_file() and not bpe_files:
        missing.append("tokenizer/tokenizer.json")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing, kv


def _missing_weights(sub: Path, comp: str) -> list[str]:
    if not sub.is_dir():
        return [f"{comp}/ (weights)"]
    for pattern in _INDEX_GLOBS:  # sharded: every shard the index lists must be there
        for idx in sub.glob(pattern):
            try:
                shards = set(json.loads(idx.read_text())["weight_map"].values())
            except (OSError, KeyError, json.JSONDecodeError):
                return [f"{comp}/{idx.name} (unreadable)"]
            return [f"{comp}/{s}" for s in sorted(shards) if not (sub / s).is_file()]
    if any(p for g in _WEIGHT_GLOBS for p in sub.glob(g)):
        return []
    return [f"{comp}/ weights (*.safetensors)"]


def validate(model: str | Path, models_dir: Path | None = None) -> tuple[Path, bool]:
    """Resolve and check a model folder; returns (folder, kv). One error lists everything missing."""
    folder = resolve(model, models_dir)
    missing, kv = missing_parts(folder)
    if missing:
        raise EngineConfigError(
            f"model folder {folder} is incomplete: missing {', '.join(missing)}; {download_hint(str(model))}")
    return folder, kv


def load(model: str | Path, models_dir: Path | None = None, *, dtype=None, device=None) -> Flux2Components:
    """Validate and load the five components (weights on `device`, in `dtype`)."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen2TokenizerFast, Qwen3ForCausalLM

    folder, kv = validate(model, models_dir)
    dtype = dtype or torch.float32
    try:
        transformer = Flux2Transformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype)
        vae = AutoencoderKLFlux2.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
        text_encoder = Qwen3ForCausalLM.from_pretrained(folder / "text_encoder", dtype=dtype)
        tokenizer = Qwen2TokenizerFast.from_pretrained(folder / "tokenizer")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    except Exception as e:  # corrupt or truncated files raise library-specific errors (e.g. SafetensorError)
        first = " ".join(str(e).split())[:300]
        raise EngineConfigError(f"could not load the model in {folder} ({type(e).__name__}: {first}); the download "
                                f"may be corrupt: delete the folder and {download_hint(str(model))}") from e
    for m in (transformer, vae, text_encoder):
        m.eval().requires_grad_(False)
        if device is not None:
            m.to(device)
    return Flux2Components(folder, kv, transformer, vae, text_encoder, tokenizer, scheduler)
