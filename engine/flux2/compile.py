"""`torch.compile` per module, each falling back to eager on its own when compiling or running it fails.

Compilation errors surface on the first call (tracing happens lazily), so each module's forward is wrapped:
the first failure switches that module - and only that module - back to its eager forward for good.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def _reason(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split())  # dynamo's messages span lines; the cause is on the second one
    return f"{type(e).__name__}: {text[:limit]}"


class _Guarded:
    """Callable replacing `module.forward`: compiled until the first failure, eager afterwards."""

    def __init__(self, name: str, eager, compiled, report: dict[str, str]):
        self.name, self.eager, self.compiled, self.report = name, eager, compiled, report

    def __call__(self, *args: Any, **kwargs: Any):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # the compiler's failure, not the model's: eager re-raises real errors
                self.compiled = None
                self.report[self.name] = f"eager ({_reason(e)})"
                log.warning("torch.compile failed for %s, running it eagerly: %s", self.name, e)
        return self.eager(*args, **kwargs)


def compile_modules(modules: dict[str, torch.nn.Module], **compile_kwargs: Any) -> dict[str, str]:
    """Compile each module in place (its forward); returns {name: "compiled" | "eager (reason)"}, kept current."""
    report: dict[str, str] = {}
    for name, module in modules.items():
        eager = module.forward
        try:
            compiled = torch.compile(eager, **compile_kwargs)
        except Exception as e:  # e.g. an unknown backend or a platform without compiler support
            report[name] = f"eager ({_reason(e)})"
            continue
        module.forward = _Guarded(name, eager, compiled, report)
        report[name] = "compiled"
    return report


def uncompile(modules: dict[str, torch.nn.Module]) -> None:
    for module in modules.values():
        fwd = module.__dict__.get("forward")
        if isinstance(fwd, _Guarded):
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
