"""The spatial cache as an engine uses it: one call per frame, one per denoising step.

    sc = SpatialCache(transformer, CacheOptions())
    sc.begin_frame(frame, CacheKey(prompt, seed, steps, w, h, reference), layout=..., timesteps=..., txt_ids=..., img_ids=...)
    for s in range(steps):
        v = sc.step(s, hidden_states, prompt_embeds)   # instead of transformer(...)[0][:, :N]
    stats = sc.end_frame()

A change of any CacheKey field (prompt, seed, steps, resolution, reference) recomputes everything;
so does an active fraction above rho (the dense model, never slower than no cache).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from engine.options import CacheOptions
from engine.spatial_cache.flops import plan_flops
from engine.spatial_cache.forward import CachedFlux2Transformer
from engine.spatial_cache.layout import RowPlan, TokenLayout, default_buckets
from engine.spatial_cache.mask import ChangeMask, MaskProposal


class CacheKey(NamedTuple):
    """Everything whose change invalidates every cached row."""

    prompt: str
    seed: int
    steps: int
    width: int
    height: int
    reference: str | None = None  # identity of a fixed style reference image (e.g. its path or hash)


class SpatialCache:
    """Change mask + cached forward + stats for one stream of frames."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        settings: CacheOptions | None = None,
        *,
        kv_reference: bool = False,
        ref_fixed_timestep: float = 0.0,
        buckets: tuple[int, ...] | str | None = "auto",
        compile: bool = False,
    ) -> None:
        self.transformer = transformer
        self.compile = compile
        self.settings = settings or CacheOptions()  # validated where it came in (CacheOptions.parse)
        self.kv_reference = kv_reference
        self.ref_fixed_timestep = ref_fixed_timestep
        self._buckets_opt = buckets
        self._fwd: CachedFlux2Transformer | None = None
        self._mask: ChangeMask | None = None
        self._key: CacheKey | None = None
        self._pending: tuple[MaskProposal, bool] | None = None
        self._plans: list[RowPlan] = []
        self._dense_plans: list[RowPlan] = []
        self._flops_dense = 0.0  # FLOPs of the dense plans: constant per layout, counted where they are built
        self.last_mask: np.ndarray | None = None  # bool (H/16, W/16): cells recomputed for the last frame
        self.last_reason: str = ""  # why the last frame was dense ("" when it was not)
        self.stats: dict[str, float] = {}

    def begin_frame(
        self,
        frame: np.ndarray,
        key: CacheKey,
        *,
        layout: TokenLayout,
        timesteps: torch.Tensor,
        txt_ids: torch.Tensor,
        img_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> np.ndarray:
        """Decide what this frame recomputes; returns the mask (bool (H/16, W/16)). `frame` is the
        webcam frame at model resolution (uint8 (H, W, 3))."""
        reason = "previous frame did not finish" if self._pending is not None else ""
        if self._key is None:
            reason = reason or "first frame"
        elif key != self._key:
            changed = [f for f in CacheKey._fields if getattr(key, f) != getattr(self._key, f)]
            reason = reason or "changed: " + ", ".join(changed)
        if self._fwd is None or self._fwd.layout != layout or self._fwd.steps != key.steps:
            self._fwd = None  # free the old buffers before allocating the new ones
            p = next(self.transformer.parameters())
            buckets = self._buckets_opt
            if buckets == "auto":
                buckets = default_buckets(layout.image) if p.device.type == "cuda" else None
            self._fwd = CachedFlux2Transformer(
                self.transformer, layout, key.steps, kv_reference=self.kv_reference,
                ref_fixed_timestep=self.ref_fixed_timestep, buckets=buckets, compile=self.compile,
            )
            self._mask = ChangeMask(layout.grid_h, layout.grid_w, layout.side, tau=self.settings.tau,
                                    halo=self.settings.halo, refresh_period=self.settings.refresh_period)
            reason = reason or "new layout"
        assert self._mask is not None
        if reason:
            self._fwd.prepare(timesteps, txt_ids, img_ids, guidance)
            self._dense_plans = self._fwd.plan(None)
            self._flops_dense = self._plan_flops(self._dense_plans)
            self._mask.reset()
        self._key = key

        proposal = self._mask.propose(frame)
        frac = proposal.active_fraction
        dense = bool(reason) or proposal.first or frac > self.settings.rho
        if dense and not reason:
            reason = f"active fraction {frac:.2f} > rho {self.settings.rho}"
        self._plans = self._dense_plans if dense else self._fwd.plan(proposal.active.reshape(-1), proposal.side)
        self._pending = (proposal, dense)
        self.last_reason = reason
        self.last_mask = np.ones_like(proposal.active) if dense else proposal.active.copy()
        return self.last_mask

    def _plan_flops(self, plans: list[RowPlan]) -> float:
        fwd = self._fwd
        return sum(plan_flops(self.transformer, fwd.layout, p, kv_step0=fwd.kv_reference and s == 0)
                   for s, p in enumerate(plans))

    def step(self, step: int, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """The transformer output for the noise tokens [1, N, C] at `step` of the current frame."""
        if self._pending is None or self._fwd is None:
            raise RuntimeError("call begin_frame() before step()")
        return self._fwd.forward(step, self._plans[step], hidden_states, encoder_hidden_states)

    def end_frame(self) -> dict[str, float]:
        """Record the frame as computed; returns (and keeps in `stats`) the frame's figures."""
        if self._pending is None or self._fwd is None or self._mask is None:
            raise RuntimeError("end_frame() without begin_frame()")
        proposal, dense = self._pending
        self._mask.commit(proposal, full=dense)
        self._pending = None
        fwd, full = self._fwd, self._flops_dense
        executed = full if dense else self._plan_flops(self._plans)
        active = self.last_mask
        self.stats = {
            "active_fraction": float(active.mean()),
            "active_cells": float(active.sum()),
            "changed_cells": float(proposal.changed.sum()),
            "refreshed_cells": float(0 if dense else proposal.refreshed.sum()),
            "side_rows_refreshed": float(fwd.layout.side if dense else proposal.side.sum()),
            "dense": float(dense),
            "flops_executed": float(executed),
            "flops_dense": float(full),
            "flop_ratio": executed / full if full else 0.0,
            "cache_bytes": float(fwd.cache.nbytes()),
        }
        return self.stats
