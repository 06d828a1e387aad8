"""`torch.compile` with an eager fallback per callable, shared by the FLUX.2 engine and the spatial cache.

Compilation happens lazily on the first call, so the compiled callable is wrapped: a compiler failure
(dynamo / inductor) switches that callable - and only that one - back to eager for good. Any other error
(CUDA out of memory, a real shape error of the model at run time) is the model's, not the compiler's:
it propagates and the callable stays compiled.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def reason(e: BaseException, limit: int = 240) -> str:
    text = " ".join(str(e).split())  # dynamo's messages span lines; the cause is on the second one
    return f"{type(e).__name__}: {text[:limit]}"


def _compiler_errors() -> tuple[type[BaseException], ...]:
    # BackendCompilerFailed, InductorError, Unsupported, TorchRuntimeError, InternalTorchDynamoError, ... all
    # derive from TorchDynamoException; inductor's own errors reach the caller wrapped in one of them
    import torch._dynamo.exc as dynamo_exc

    return (dynamo_exc.TorchDynamoException,)


class CompileGuard:
    """Callable: `compiled` until its first compiler failure, `eager` afterwards; `report[name]` says which."""

    def __init__(self, name: str, eager: Callable, compiled: Callable, report: dict[str, str]):
        self.name, self.eager, self.compiled, self.report = name, eager, compiled, report
        self.errors = _compiler_errors()
        report[name] = "compiled"

    def __call__(self, *args: Any, **kwargs: Any):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except self.errors as e:
                self.compiled = None
                self.report[self.name] = f"eager ({reason(e)})"
                log.warning("torch.compile failed for %s, running it eagerly: %s", self.name, e)
        return self.eager(*args, **kwargs)


def guard(name: str, eager: Callable, report: dict[str, str], **compile_kwargs: Any) -> Callable:
    """`eager` compiled behind a CompileGuard, or `eager` itself (reported) where torch.compile refuses at once
    (an unknown backend, a platform without compiler support)."""
    try:
        compiled = torch.compile(eager, **compile_kwargs)
    except Exception as e:  # nothing of the model ran yet: any failure here is the compiler's
        report[name] = f"eager ({reason(e)})"
        return eager
    return CompileGuard(name, eager, compiled, report)
