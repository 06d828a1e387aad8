"""FLOP counting: FlopCounterMode with CPU SDPA counted, and an analytic per-frame estimate.

torch's FlopCounterMode has no formula for `aten._scaled_dot_product_flash_attention_for_cpu` and
counts CPU attention as 0; `count_flops` maps it to torch's own SDPA formula (locally, through
`custom_mapping`, not the global registry).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from engine.spatial_cache.layout import RowPlan, TokenLayout

aten = torch.ops.aten


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also counts CPU flash attention."""
    return FlopCounterMode(display=False, custom_mapping={aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop})


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run `fn()` and return (FLOPs it executed, its result)."""
    counter = flop_counter()
    with counter:
        result = fn()
    return counter.get_total_flops(), result


def plan_flops(model: torch.nn.Module, layout: TokenLayout, plan: RowPlan, *, kv_step0: bool = False) -> int:
    """Analytic FLOPs of one step of the cached forward for `plan` (matrix multiplies and attention;
    the element-wise work is a few percent and left out). Dense = a full plan."""
    cfg = model.config
    d = cfg.num_attention_heads * cfg.attention_head_dim
    mlp = int(d * cfg.mlp_ratio)
    nt, ni, nn_, nr = plan.n_text, plan.n_image, plan.n_noise, plan.n_ref
    n = plan.n
    if n == 0:
        return 0
    keys = layout.length
    ref_keys = layout.length - layout.ref_start
    # attention keys per query: 9B-KV reference queries see only the reference keys at step 0
    attn_pairs = (n - nr) * keys + nr * ref_keys if kv_step0 else n * keys
    attn = 4 * attn_pairs * d  # QK^T and AV
    double_rows = 2 * d * 3 * d + 2 * d * d + 2 * d * 2 * mlp + 2 * mlp * d  # qkv, out, ff in (gate+up), ff out
    single_rows = 2 * d * (3 * d + 2 * mlp) + 2 * (d + mlp) * d
    total = len(model.transformer_blocks) * (n * double_rows + attn)
    total += len(model.single_transformer_blocks) * (n * single_rows + attn)
    total += 2 * ni * cfg.in_channels * d + 2 * nt * cfg.joint_attention_dim * d + 2 * nn_ * d * model.out_channels
    return int(total)
