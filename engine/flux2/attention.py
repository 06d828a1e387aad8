"""Attention backend choice: the fastest of diffusers' dispatch backends that works here, verified by a real call.

Each candidate runs a small attention (also with fewer queries than keys, as the spatial cache needs) in the
serving dtype on the serving device and must match PyTorch's math attention; the first candidate in
fastest-first order that passes wins. Backends that fetch kernels from the hub or quantise (sage) are never
chosen automatically, only when named.
"""
from __future__ import annotations

import logging

import torch

from engine.errors import EngineConfigError

log = logging.getLogger(__name__)

# fastest first; "native" (torch SDPA, which picks its own kernel) always works and ends every list
CUDA_ORDER = ("_flash_3", "flash", "_native_cudnn", "_native_flash", "_native_efficient", "native")
CPU_ORDER = ("native",)


def known_backends() -> list[str]:
    from diffusers.models.attention_dispatch import AttentionBackendName

    return sorted(b.value for b in AttentionBackendName)


def verify(backend: str, device: torch.device, dtype: torch.dtype, heads: int = 2, head_dim: int = 64) -> str | None:
    """None when `backend` computes attention correctly here, else the reason it does not."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    g = torch.Generator(device="cpu").manual_seed(0)
    tol = 1e-3 if dtype == torch.float32 else 3e-2
    try:
        for lq, lk in ((64, 64), (16, 64)):  # (B, L, H, D) layout, as diffusers passes it
            q = torch.randn(1, lq, heads, head_dim, generator=g).to(device, dtype)
            k = torch.randn(1, lk, heads, head_dim, generator=g).to(device, dtype)
            v = torch.randn(1, lk, heads, head_dim, generator=g).to(device, dtype)
            out = dispatch_attention_fn(q, k, v, backend=backend)
            ref = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / head_dim**0.5, dim=-1)
            ref = torch.einsum("bhqk,bkhd->bqhd", ref, v.float())
            err = (out.float() - ref).abs().max().item()
            if not err <= tol:  # also catches NaN
                return f"wrong result (max error {err:.2e})"
    except Exception as e:  # a missing package, an unsupported device or dtype: all mean "not usable"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def check_name(requested: str) -> None:
    names = known_backends()
    if requested != "auto" and requested not in names:
        raise EngineConfigError(f"unknown attention backend {requested!r}; use 'auto' or one of {', '.join(names)}")


def choose(requested: str, device: torch.device, dtype: torch.dtype) -> tuple[str, dict[str, str]]:
    """(backend, {tried backend: reason it failed}) for `requested` ("auto" or a backend name)."""
    check_name(requested)
    failures: dict[str, str] = {}
    if requested != "auto":
        reason = verify(requested, device, dtype)
        if reason is None:
            return requested, failures
        failures[requested] = reason
        log.warning("attention backend %r does not work here (%s); probing for another", requested, reason)
    order = CUDA_ORDER if device.type == "cuda" else CPU_ORDER
    for name in order:
        if name in failures:
            continue
        reason = verify(name, device, dtype)
        if reason is None:
            return name, failures
        failures[name] = reason
    raise EngineConfigError(f"no attention backend works on {device} in {dtype}: {failures}; "
                            "check the PyTorch installation")
