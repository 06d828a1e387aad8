"""Preallocated per-step, per-block K/V and model-output caches (in the shape of gpt-fast's KVCache).

One frame writes the rows it recomputes; static rows keep the values of the frame that last
computed them. Keys are (step index, block): a static cell's K/V at step s are those it had at
step s, when the same initial noise put it on the same trajectory.
"""
from __future__ import annotations

import torch
from torch import nn


class LayerKVCache(nn.Module):
    """K and V of one block for every denoising step, after QK-norm and RoPE."""

    def __init__(self, steps: int, length: int, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        shape = (steps, 1, length, heads, head_dim)  # [step, batch 1, row, head, head_dim]
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, step: int, rows: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [1, n, H, Dh] at `rows` (None: every row) of `step`; return that step's full K, V [1, L, H, Dh]."""
        k_out, v_out = self.k_cache[step], self.v_cache[step]
        if rows is None:
            k_out.copy_(k)
            v_out.copy_(v)
        else:
            k_out.index_copy_(1, rows, k)
            v_out.index_copy_(1, rows, v)
        return k_out, v_out

    def copy_rows(self, src_step: int, rows: torch.Tensor | slice, dst_steps: range) -> None:
        """Copy rows of one step into other steps (9B-KV: step 0's reference K/V serve every step)."""
        for s in dst_steps:
            if isinstance(rows, slice):
                self.k_cache[s, :, rows] = self.k_cache[src_step, :, rows]
                self.v_cache[s, :, rows] = self.v_cache[src_step, :, rows]
            else:
                self.k_cache[s].index_copy_(1, rows, self.k_cache[src_step].index_select(1, rows))
                self.v_cache[s].index_copy_(1, rows, self.v_cache[src_step].index_select(1, rows))


class OutputCache(nn.Module):
    """The model output (velocity) of every noise token for every step."""

    def __init__(self, steps: int, tokens: int, channels: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.register_buffer("out_cache", torch.zeros(steps, 1, tokens, channels, dtype=dtype, device=device), persistent=False)

    def update(self, step: int, rows: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
        """Write out [1, n, C] at noise `rows` (None: every row); return the step's full output [1, N, C]."""
        buf = self.out_cache[step]
        if rows is None:
            buf.copy_(out)
        else:
            buf.index_copy_(1, rows, out)
        return buf


class SpatialKVCache(nn.Module):
    """Everything a cached frame reads: K/V per (step, block) and the output per step."""

    def __init__(
        self,
        *,
        steps: int,
        length: int,
        noise_tokens: int,
        out_channels: int,
        heads: int,
        head_dim: int,
        double_blocks: int,
        single_blocks: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.steps = steps
        self.double_layers = nn.ModuleList(LayerKVCache(steps, length, heads, head_dim, dtype, device) for _ in range(double_blocks))
        self.single_layers = nn.ModuleList(LayerKVCache(steps, length, heads, head_dim, dtype, device) for _ in range(single_blocks))
        self.out = OutputCache(steps, noise_tokens, out_channels, dtype, device)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())
