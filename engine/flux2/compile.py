"""`torch.compile` per module, each falling back to eager on its own when compiling it fails (see
engine.compile_guard: only compiler errors switch a module to eager; the model's own errors propagate)."""
from __future__ import annotations

from typing import Any

import torch

from engine.compile_guard import CompileGuard, guard


def compile_modules(modules: dict[str, torch.nn.Module], **compile_kwargs: Any) -> dict[str, str]:
    """Compile each module in place (its forward); returns {name: "compiled" | "eager (reason)"}, kept current."""
    report: dict[str, str] = {}
    for name, module in modules.items():
        fwd = guard(name, module.forward, report, **compile_kwargs)
        if isinstance(fwd, CompileGuard):
            module.forward = fwd
    return report


def uncompile(modules: dict[str, torch.nn.Module]) -> None:
    for module in modules.values():
        if isinstance(module.__dict__.get("forward"), CompileGuard):
            del module.forward


def compile_targets(transformer: torch.nn.Module, vae: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules worth compiling: each transformer block (regional compilation: one graph per block type is
    reused, so compile time stays small) and the autoencoder's encoder and decoder."""
    out: dict[str, torch.nn.Module] = {}
    for i, b in enumerate(transformer.transformer_blocks):
        out[f"transformer.double.{i}"] = b
    for i, b in enumerate(transformer.single_transformer_blocks):
        out[f"transformer.single.{i}"] = b
    out["vae.encoder"] = vae.encoder
    out["vae.decoder"] = vae.decoder
    return out
