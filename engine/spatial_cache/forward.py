"""Cached forward for diffusers' `Flux2Transformer2DModel`: only the rows of a `RowPlan` go through the blocks.

Plain block code over the model's own weights (the stock block forwards always run the text stream
and the whole sequence, so they cannot skip rows). For each step s and block b:

    active rows x [1, n, D] -> modulation -> projections -> QK-norm -> RoPE (their rotary rows)
    K/V of the active rows are written into cache[s][b]; attention = active queries x full K/V [1, L]
    -> output projection, gated residual, FFN, all on the n rows only.

Static noise tokens take the step's cached output. With every row active (`RowPlan.full`) this is
the dense model and fills every cache; it matches the unpatched transformer (tests check 1e-5).

9B-KV (`kv_reference=True`, the Flux2KleinKVPipeline's mechanism, reproduced exactly): reference rows
are computed at step 0 only, modulated at a fixed timestep and attending only to reference keys;
their K/V serve every later step (copied into the later steps' caches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_flux2 import Flux2Modulation, Flux2Transformer2DModel

from engine.compile_guard import guard
from engine.spatial_cache.cache import SpatialKVCache
from engine.spatial_cache.layout import RowPlan, TokenLayout, build_row_plan

Mod = tuple[torch.Tensor, ...]


@dataclass
class StepConsts:
    """Everything of a step that depends only on its timestep: computed once per (shape, steps)."""

    double_img: Mod  # shift, scale, gate (attention), shift, scale, gate (FFN); each [1, 1, D]
    double_txt: Mod
    single: Mod  # shift, scale, gate; each [1, 1, D]
    out_scale: torch.Tensor  # [1, 1, D] norm_out
    out_shift: torch.Tensor
    ref_double_img: Mod | None = None  # 9B-KV: reference rows at the fixed reference timestep
    ref_single: Mod | None = None


def _flat(mods: tuple[tuple[torch.Tensor, ...], ...]) -> Mod:
    return tuple(t for group in mods for t in group)


def _rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [1, n, H, Dh] rotated by the rows' freqs [n, Dh/2, 2] (cos, sin): diffusers' interleaved pairs
    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin), as one complex multiply (~8x fewer passes on CPU)."""
    xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # [1, n, H, Dh/2]
    return torch.view_as_real(xc * torch.view_as_complex(freqs)[None, :, None, :]).flatten(-2).to(x.dtype)


def _rope_real(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """The same rotation without complex tensors, which torch.compile (inductor) cannot fuse."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c, s = freqs[None, :, None, :, 0], freqs[None, :, None, :, 1]
    return torch.stack((x0 * c - x1 * s, x1 * c + x0 * s), dim=-1).flatten(-2).to(x.dtype)


def _rows_mod(a: Mod, b: Mod, n_a: int, n_b: int) -> Mod:
    # per-row modulation: the first n_a rows take `a`, the last n_b take `b` (9B-KV step 0)
    return tuple(torch.cat([x.expand(1, n_a, -1), y.expand(1, n_b, -1)], dim=1) for x, y in zip(a, b))


class CachedFlux2Transformer:
    """Runs `RowPlan`s through a `Flux2Transformer2DModel` against a `SpatialKVCache` for one token layout."""

    def __init__(
        self,
        model: Flux2Transformer2DModel,
        layout: TokenLayout,
        steps: int,
        *,
        kv_reference: bool = False,
        ref_fixed_timestep: float = 0.0,
        buckets: tuple[int, ...] | None = None,
        compile: bool = False,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        cfg = model.config
        if cfg.patch_size != 1:
            raise ValueError(f"the spatial cache expects patch_size 1 (FLUX.2 klein), got {cfg.patch_size}")
        if kv_reference and layout.image == layout.cells:
            raise ValueError("kv_reference needs reference tokens in the layout (grid_refs or extra)")
        self.model = model
        self.layout = layout
        self.steps = steps
        self.kv_reference = kv_reference
        self.ref_fixed_timestep = ref_fixed_timestep
        self.buckets = buckets
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.attention_head_dim
        self.cache = SpatialKVCache(
            steps=steps,
            length=layout.length,
            noise_tokens=layout.cells,
            out_channels=model.out_channels,
            heads=self.heads,
            head_dim=self.head_dim,
            double_blocks=len(model.transformer_blocks),
            single_blocks=len(model.single_transformer_blocks),
            dtype=self.dtype,
            device=self.device,
        )
        self._consts: list[StepConsts] | None = None
        self._freqs: torch.Tensor | None = None
        # block code, optionally torch.compile'd: one graph per block type is reused by every block, and
        # bucketed row counts keep the shapes few (dynamo marks the row dimension dynamic after one change)
        self.compile_report: dict[str, str] = {}
        self._double_fn = guard("double", self._double, self.compile_report) if compile else self._double
        self._single_fn = guard("single", self._single, self.compile_report) if compile else self._single
        self._rope = _rope_real if compile else _rope

    # ---- per (shape, steps, seed) preparation ---------------------------------------------------
    @torch.no_grad()
    def prepare(self, timesteps: torch.Tensor, txt_ids: torch.Tensor, img_ids: torch.Tensor, guidance: torch.Tensor | None = None) -> None:
        """Cache the rotary table and every step's modulation vectors.

        `timesteps` (steps,): what the transformer receives (sigma, i.e. t / 1000); `txt_ids`
        [T, 4] and `img_ids` [image rows, 4] (a leading batch dim is accepted) in canonical order
        [noise, grid references, extra]."""
        m, lay = self.model, self.layout
        txt_ids = txt_ids[0] if txt_ids.ndim == 3 else txt_ids
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
        if txt_ids.shape[0] != lay.text or img_ids.shape[0] != lay.image:
            raise ValueError(f"ids do not match {lay}: txt_ids {tuple(txt_ids.shape)}, img_ids {tuple(img_ids.shape)}")
        timesteps = torch.as_tensor(timesteps).reshape(-1)
        if timesteps.numel() != self.steps:
            raise ValueError(f"expected {self.steps} timesteps, got {timesteps.numel()}")
        cos_t, sin_t = m.pos_embed(txt_ids.to(self.device))
        cos_i, sin_i = m.pos_embed(img_ids.to(self.device))
        # diffusers' tables repeat each frequency for both members of a pair: keep one (cos, sin) per pair
        cos, sin = torch.cat([cos_t, cos_i]), torch.cat([sin_t, sin_i])  # [L, Dh]
        self._freqs = torch.stack([cos[:, 0::2], sin[:, 0::2]], dim=-1).float().contiguous()  # [L, Dh/2, 2]
        consts = []
        for s in range(self.steps):
            t = timesteps[s : s + 1].to(self.device, self.dtype) * 1000
            g = None if guidance is None else guidance.to(self.device, self.dtype).reshape(1) * 1000
            temb = m.time_guidance_embed(t, g)
            emb = m.norm_out.linear(m.norm_out.silu(temb).to(self.dtype))
            scale, shift = torch.chunk(emb, 2, dim=1)
            c = StepConsts(
                double_img=_flat(Flux2Modulation.split(m.double_stream_modulation_img(temb), 2)),
                double_txt=_flat(Flux2Modulation.split(m.double_stream_modulation_txt(temb), 2)),
                single=_flat(Flux2Modulation.split(m.single_stream_modulation(temb), 1)),
                out_scale=scale[:, None, :],
                out_shift=shift[:, None, :],
            )
            if self.kv_reference:
                ref_temb = m.time_guidance_embed(torch.full_like(t, self.ref_fixed_timestep * 1000), g)
                c.ref_double_img = _flat(Flux2Modulation.split(m.double_stream_modulation_img(ref_temb), 2))
                c.ref_single = _flat(Flux2Modulation.split(m.single_stream_modulation(ref_temb), 1))
            consts.append(c)
        self._consts = consts

    # ---- per frame ------------------------------------------------------------------------------
    def plan(self, active_cells: np.ndarray | None, active_side: np.ndarray | None = None) -> list[RowPlan]:
        """One RowPlan per step. `active_cells=None`: every row (the dense model, refreshing all caches)."""
        if self._freqs is None:
            raise RuntimeError("call prepare() before plan()")
        kw = dict(freqs=self._freqs, buckets=self.buckets)
        first = build_row_plan(self.layout, active_cells, active_side, include_refs=True, **kw)
        if not self.kv_reference or self.steps == 1:
            return [first] * self.steps
        later = build_row_plan(self.layout, active_cells, active_side, include_refs=False, **kw)
        return [first] + [later] * (self.steps - 1)

    # ---- per step -------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, step: int, plan: RowPlan, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """The model output for every noise token [1, N, C_out] at `step`.

        `hidden_states` [1, image rows, C_in] in canonical order (9B-KV after step 0: the noise rows
        alone suffice); `encoder_hidden_states` [1, T, joint_dim]."""
        if self._consts is None:
            raise RuntimeError("call prepare() before forward()")
        if hidden_states.shape[0] != 1:
            raise ValueError(f"the spatial cache serves one stream: batch size must be 1, got {hidden_states.shape[0]}")
        m, c = self.model, self._consts[step]
        if plan.n == 0:  # nothing changed: every noise token takes the cached output
            return self.cache.out.out_cache[step].clone()
        kv0 = self.kv_reference and step == 0 and plan.n_ref > 0

        # 1. inputs of the active rows, embedded once
        if plan.full:
            x_img = m.x_embedder(hidden_states)
            x_txt = m.context_embedder(encoder_hidden_states)
        else:
            x_img = m.x_embedder(hidden_states.index_select(1, plan.img_in)) if plan.n_image else None
            x_txt = m.context_embedder(encoder_hidden_states.index_select(1, plan.txt_in)) if plan.n_text else None

        img_mod, single_mod = c.double_img, c.single
        if kv0:
            img_mod = _rows_mod(c.double_img, c.ref_double_img, plan.n_noise, plan.n_ref)
            single_mod = _rows_mod(c.single, c.ref_single, plan.n_text + plan.n_noise, plan.n_ref)

        # 2. double-stream blocks: text rows through the context weights, image rows through the image weights
        for blk, kv in zip(m.transformer_blocks, self.cache.double_layers):
            x_txt, x_img = self._double_fn(blk, kv, step, plan, x_txt, x_img, img_mod, c.double_txt, kv0)

        # 3. single-stream blocks over [text rows, image rows]
        x = x_img if x_txt is None else (x_txt if x_img is None else torch.cat([x_txt, x_img], dim=1))
        for blk, kv in zip(m.single_transformer_blocks, self.cache.single_layers):
            x = self._single_fn(blk, kv, step, plan, x, single_mod, kv0)

        # 4. output of the active noise rows; static ones keep the cached output of this step
        if kv0 and self.steps > 1:
            ref_rows = slice(self.layout.ref_start, None) if plan.full else plan.rows[plan.n_text + plan.n_noise :]
            for kv in list(self.cache.double_layers) + list(self.cache.single_layers):
                kv.copy_rows(0, ref_rows, range(1, self.steps))
        if plan.n_noise:
            noise = x[:, plan.n_text : plan.n_text + plan.n_noise]
            out = m.proj_out(m.norm_out.norm(noise) * (1 + c.out_scale) + c.out_shift)
            self.cache.out.update(step, None if plan.full else plan.noise_out, out)
        return self.cache.out.out_cache[step].clone()

    # ---- blocks -----------------------------------------------------------------------------------
    def _attend(self, attn, q: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor, plan: RowPlan, kv0: bool) -> torch.Tensor:
        backend = getattr(attn.processor, "_attention_backend", None)
        if kv0:
            # 9B-KV step 0: reference queries attend only to reference keys, the others to everything
            rs, n_main = self.layout.ref_start, plan.n - plan.n_ref
            parts = [dispatch_attention_fn(q[:, :n_main], k_all, v_all, backend=backend)] if n_main else []
            parts.append(dispatch_attention_fn(q[:, n_main:], k_all[:, rs:], v_all[:, rs:], backend=backend))
            o = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        else:
            o = dispatch_attention_fn(q, k_all, v_all, backend=backend)
        return o.flatten(2, 3).to(q.dtype)  # [1, n, H * Dh]

    def _double(self, blk, kv, step: int, plan: RowPlan, x_txt, x_img, mod: Mod, mod_txt: Mod, kv0: bool):
        attn, dh = blk.attn, blk.attn.head_dim
        streams = []  # (q, k, v) of the text rows, then of the image rows, each [1, n, H, Dh]
        if plan.n_text:
            streams.append(_qkv(attn, (1 + mod_txt[1]) * blk.norm1_context(x_txt) + mod_txt[0], dh, added=True))
        if plan.n_image:
            streams.append(_qkv(attn, (1 + mod[1]) * blk.norm1(x_img) + mod[0], dh, added=False))
        q, k, v = (t[0] if len(t) == 1 else torch.cat(t, dim=1) for t in zip(*streams))  # [1, n, H, Dh]
        q, k = self._rope(q, plan.freqs), self._rope(k, plan.freqs)
        k_all, v_all = kv.update(step, plan.rows, k, v)
        o = self._attend(attn, q, k_all, v_all, plan, kv0)

        if plan.n_text:
            c_gate, c_shift2, c_scale2, c_gate2 = mod_txt[2], mod_txt[3], mod_txt[4], mod_txt[5]
            x_txt = x_txt + c_gate * attn.to_add_out(o[:, : plan.n_text])
            x_txt = x_txt + c_gate2 * blk.ff_context(blk.norm2_context(x_txt) * (1 + c_scale2) + c_shift2)
            if x_txt.dtype == torch.float16:
                x_txt = x_txt.clip(-65504, 65504)
        if plan.n_image:
            gate, shift2, scale2, gate2 = mod[2], mod[3], mod[4], mod[5]
            x_img = x_img + gate * attn.to_out[1](attn.to_out[0](o[:, plan.n_text :]))
            x_img = x_img + gate2 * blk.ff(blk.norm2(x_img) * (1 + scale2) + shift2)
        return x_txt, x_img

    def _single(self, blk, kv, step: int, plan: RowPlan, x: torch.Tensor, mod: Mod, kv0: bool) -> torch.Tensor:
        attn, dh = blk.attn, blk.attn.head_dim
        shift, scale, gate = mod
        y = (1 + scale) * blk.norm(x) + shift
        proj = attn.to_qkv_mlp_proj(y)
        qkv_dim = 3 * attn.inner_dim
        qkv, mlp = proj.split([qkv_dim, proj.shape[-1] - qkv_dim], dim=-1)
        q, k, v = (t.unflatten(-1, (-1, dh)) for t in qkv.chunk(3, dim=-1))
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k = self._rope(q, plan.freqs), self._rope(k, plan.freqs)
        k_all, v_all = kv.update(step, plan.rows, k, v)
        o = self._attend(attn, q, k_all, v_all, plan, kv0)
        x = x + gate * attn.to_out(torch.cat([o, attn.mlp_act_fn(mlp)], dim=-1))
        if x.dtype == torch.float16:
            x = x.clip(-65504, 65504)
        return x


def _qkv(attn, y: torch.Tensor, dh: int, added: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projections + QK-norm of one stream of a double block: the text stream uses the `add_*` (added)
    weights, the image stream the plain ones. Returns q, k, v as [1, n, H, Dh]."""
    if getattr(attn, "fused_projections", False):
        q, k, v = (attn.to_added_qkv if added else attn.to_qkv)(y).chunk(3, dim=-1)
    elif added:
        q, k, v = attn.add_q_proj(y), attn.add_k_proj(y), attn.add_v_proj(y)
    else:
        q, k, v = attn.to_q(y), attn.to_k(y), attn.to_v(y)
    norm_q, norm_k = (attn.norm_added_q, attn.norm_added_k) if added else (attn.norm_q, attn.norm_k)
    return norm_q(q.unflatten(-1, (-1, dh))), norm_k(k.unflatten(-1, (-1, dh))), v.unflatten(-1, (-1, dh))
