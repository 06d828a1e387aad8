"""Spatial cache for FLUX.2: recompute only the tokens of the regions that changed.

- `mask`: change mask per 16x16 cell (tau, halo, rolling refresh).
- `cache`: preallocated per-step, per-block K/V and output caches.
- `forward`: the cached forward (own block code over a Flux2Transformer2DModel's weights).
- `flops`: FlopCounterMode with CPU attention counted, and the analytic per-frame estimate.
- `controller`: `SpatialCache`, what an engine calls per frame and per step.

Its settings are `engine.options.CacheOptions` (re-exported here).
"""
from engine.spatial_cache.cache import LayerKVCache, OutputCache, SpatialKVCache
from engine.options import CacheOptions
from engine.spatial_cache.controller import CacheKey, SpatialCache
from engine.spatial_cache.flops import count_flops, flop_counter, plan_flops
from engine.spatial_cache.forward import CachedFlux2Transformer
from engine.spatial_cache.layout import RowPlan, TokenLayout, build_row_plan, bucket_size, default_buckets
from engine.spatial_cache.mask import ChangeMask, MaskProposal

__all__ = [
    "CacheKey", "CacheOptions", "CachedFlux2Transformer", "ChangeMask", "LayerKVCache", "MaskProposal",
    "OutputCache", "RowPlan", "SpatialCache", "SpatialKVCache", "TokenLayout", "bucket_size", "build_row_plan",
    "count_flops", "default_buckets", "flop_counter", "plan_flops",
]
