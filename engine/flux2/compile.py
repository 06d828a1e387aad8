"""`torch.compile` for the FLUX.2 engine: the transformer's repeated blocks through diffusers'
`ModelMixin.compile_repeated_blocks` (regional compilation: one graph per block type is reused, so compile time
stays small) and the autoencoder's encoder and decoder per module. Each compiled callable falls back to eager on
its own when compiling it fails (engine.compile_guard: only compiler errors do; the model's own errors propagate).
"""
from __future__ import annotations

from typing import Any

import torch

from engine.compile_guard import CompileGuard, guard, reason


def compile_modules(modules: dict[str, torch.nn.Module], report: dict[str, str] | None = None,
                    **compile_kwargs: Any) -> dict[str, str]:
    """Compile each module in place (its forward); returns {name: "compiled" | "eager (reason)"} (`report`, when
    given), kept current."""
    report = {} if report is None else report
    for name, module in modules.items():
        fwd = guard(name, module.forward, report, **compile_kwargs)
        if isinstance(fwd, CompileGuard):
            module.forward = fwd
    return report


def uncompile(modules: dict[str, torch.nn.Module]) -> None:
    for module in modules.values():
        if isinstance(module.__dict__.get("forward"), CompileGuard):
            del module.forward


def compile_repeated_blocks(model: Any, prefix: str, report: dict[str, str], **compile_kwargs: Any) -> None:
    """`model.compile_repeated_blocks(**compile_kwargs)` (diffusers), with the compile guard around each block.

    diffusers compiles each block with `nn.Module.compile`, which keeps the compiled call in the block's
    `_compiled_call_impl` (what `block(...)` runs while it is set); the guard takes that place and runs the
    block's eager call (`_call_impl`) once the compiler fails for it. Report keys: `<prefix>.<block path>`.
    """
    try:
        model.compile_repeated_blocks(**compile_kwargs)
    except Exception as e:  # torch.compile refused at once (unknown backend, no compiler): nothing of the model ran
        for path, block in _blocks(model):
            block._compiled_call_impl = None  # blocks compiled before the failing one run eagerly too
            report[f"{prefix}.{path}"] = f"eager ({reason(e)})"
        return
    for path, block in _blocks(model):
        if block._compiled_call_impl is not None:
            block._compiled_call_impl = CompileGuard(f"{prefix}.{path}", block._call_impl, block._compiled_call_impl,
                                                     report)


def _blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    kinds = set(model._repeated_blocks)
    return [(path, m) for path, m in model.named_modules() if type(m).__name__ in kinds]


def compile_flux2(transformer: Any, vae: Any, **compile_kwargs: Any) -> dict[str, str]:
    """Compile the transformer's blocks and the VAE's encoder and decoder; the per-callable report, kept current."""
    report: dict[str, str] = {}
    compile_repeated_blocks(transformer, "transformer", report, **compile_kwargs)
    return compile_modules({"vae.encoder": vae.encoder, "vae.decoder": vae.decoder}, report, **compile_kwargs)
