"""`fluxrt-cam bench cache`: dense vs spatially cached transformer at fixed active fractions.

The model is engine.flux2.tiny's transformer recipe with klein's head size (128), RoPE axes and token
counts for 512x512 editing (1024 noise + 1024 reference + 512 text tokens), with reduced width and depth
(random weights). Two presets (MODES): "quick", the default, 4 heads (hidden 512), 5 active fractions and
the median of 2: a third of the FLOPs per forward, a fifth of the work of "full" (`--full`: 8 heads, 6
fractions, median of 3; 151 s on 2 busy CPU cores), so that the default stays well under a minute on 2
CPU cores (44 CPU seconds). The FLOP ratios hardly depend on the width (the token layout sets them); the
speedups do a little (attention is a larger share of the work at 4 heads).
Per active fraction a, on the synthetic scene whose moving area is a:

1. frame 0 runs dense through the cached forward (filling every cache);
2. frame k (the object moved) runs with the round(a * cells) most-changed cells active, text and
   static cells served from cache; the dense model runs on the same frame k;
3. dense ms and cached ms are timed side by side (interleaved, median after warm-up), FLOPs are
   counted with FlopCounterMode (CPU attention included), and PSNR compares the cached output with
   the dense output (peak = the dense output's range; identical outputs report the 100 dB cap).

Fidelity caveat: with random weights attention is nearly uniform, so the output hardly depends on
any one cell and changes spread over all tokens instead of staying local as in a trained editing
model; the PSNRs are high for that reason and say little about real weights.

The reference tokens come from the frame through a fixed random projection of each 16x16x3 cell (a
stand-in for VAE encode + patchify with the same locality), so a change in a cell changes exactly
that cell's reference token; the noise tokens are the same seeded noise on every frame.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from engine.image import psnr
from engine.options import ModelOptions
from vcam.tools.bench import BenchProgress, device_label, no_progress

PSNR_CAP_DB = 100.0
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.9, 1.0)


@dataclass(frozen=True)
class BenchShape:
    width: int = 512
    height: int = 512
    text_tokens: int = 512
    heads: int = 8  # hidden = heads * 128
    head_dim: int = 128  # klein's
    double_blocks: int = 1
    single_blocks: int = 1
    in_channels: int = 128  # klein's packed latent channels

    def __post_init__(self) -> None:
        ModelOptions.check("width", self.width)  # the engine's bounds (EngineConfigError names the key)
        ModelOptions.check("height", self.height)
        if min(self.text_tokens, self.heads, self.double_blocks + self.single_blocks) < 1:
            raise ValueError("text_tokens, heads and the number of blocks must be >= 1")

    @property
    def hidden(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class CacheMode:
    shape: BenchShape
    fractions: tuple[float, ...]
    repeats: int


MODES = {
    "quick": CacheMode(BenchShape(heads=4), (0.0, 0.1, 0.25, 0.5, 1.0), repeats=2),
    "full": CacheMode(BenchShape(), FRACTIONS, repeats=3),
}


def mode_settings(full: bool, repeats: int | None = None, **shape: int | None) -> tuple[str, CacheMode]:
    """The preset (`full` or the quick default) with the options given on the command line (not None) put
    over it. Raises ValueError for a shape the engine would refuse."""
    name = "full" if full else "quick"
    preset = MODES[name]
    given = {k: v for k, v in shape.items() if v is not None}
    return name, CacheMode(replace(preset.shape, **given), preset.fractions, repeats or preset.repeats)


def build_model(shape: BenchShape, seed: int = 0):
    """The tiny FLUX.2 recipe (engine.flux2.tiny) at this shape, random weights as diffusers initialises them (no
    trained model fits a one-minute CPU run). Text features are about `hidden` wide (joint = 3 x text_hidden)."""
    from engine.flux2.tiny import TinySpec, build_transformer

    spec = TinySpec(heads=shape.heads, head_dim=shape.head_dim, double_blocks=shape.double_blocks,
                    single_blocks=shape.single_blocks, text_hidden=max(1, shape.hidden // 3), seed=seed)
    return build_transformer(spec, in_channels=shape.in_channels)


def top_cells(f0: np.ndarray, f1: np.ndarray, fraction: float) -> np.ndarray:
    """The round(fraction * cells) cells that changed most between two frames (the spatial cache's metric)."""
    from engine.spatial_cache.mask import box_blur3, cell_mean

    gh, gw = f0.shape[0] // 16, f0.shape[1] // 16
    diff = cell_mean(np.abs(box_blur3(f1) - box_blur3(f0)), gh, gw).reshape(-1)
    k = int(round(fraction * diff.size))
    active = np.zeros(diff.size, dtype=bool)
    active[np.argsort(-diff, kind="stable")[:k]] = True
    return active


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def run_cache_bench(
    shape: BenchShape = BenchShape(),
    fractions: tuple[float, ...] = FRACTIONS,
    repeats: int = 3,
    frame_gap: int = 3,
    seed: int = 0,
    device: str = "cpu",
    mode: str = "full",
    progress: BenchProgress | None = None,
) -> dict[str, Any]:
    """`mode` only labels the result (the preset the arguments came from)."""
    from engine.flux2.latents import image_ids
    from engine.flux2.tiny import CellTokens
    from engine.flux2.text import text_ids
    from engine.spatial_cache import CachedFlux2Transformer, TokenLayout, count_flops
    from vcam.sources.synthetic import SyntheticScene

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if any(not 0.0 <= a <= 1.0 for a in fractions):
        raise ValueError(f"active fractions must be within 0..1, got {fractions}")
    p = progress or no_progress()
    # steps: the model, the dense FLOP count, and per fraction: fill, count, `repeats` timed pairs
    p.start(2 + len(fractions) * (2 + repeats), f"cache ({mode}): building the model")
    dev = torch.device(device)
    model = build_model(shape, seed).to(dev)
    gh, gw = shape.height // 16, shape.width // 16
    layout = TokenLayout(text=shape.text_tokens, grid_h=gh, grid_w=gw, grid_refs=1)
    cached = CachedFlux2Transformer(model, layout, steps=1)
    txt_ids, img_ids = text_ids(shape.text_tokens), image_ids(gh, gw, refs=1)  # the engine's position ids
    sigma = torch.tensor([1.0])
    cached.prepare(sigma, txt_ids, img_ids)
    full_plan = cached.plan(None)[0]
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, layout.cells, shape.in_channels, generator=g).to(dev)
    text = torch.randn(1, shape.text_tokens, model.config.joint_attention_dim, generator=g).to(dev)
    tokens = CellTokens(shape.in_channels, seed)
    txt_ids, img_ids, sigma = txt_ids.to(dev), img_ids.to(dev), sigma.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def dense(hs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = model(hidden_states=hs, encoder_hidden_states=text, timestep=sigma, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]
        sync()
        return out[:, : layout.cells]

    p.advance()
    dense_flops = None
    rows = []
    for a in fractions:
        scene = SyntheticScene(shape.width, shape.height, dynamic_fraction=a, seed=seed)
        f0, f1 = scene.frame(0), scene.frame(frame_gap)
        hs0 = torch.cat([noise, tokens(f0).to(dev)], dim=1)
        hs1 = torch.cat([noise, tokens(f1).to(dev)], dim=1)
        p.doing(f"cache ({mode}) active {a:.2f}: filling the caches (frame 0)")
        cached.forward(0, full_plan, hs0, text)  # frame 0: every cache filled
        p.advance()
        plan = cached.plan(top_cells(f0, f1, a), np.zeros(layout.side, dtype=bool))[0]

        def run_cached() -> torch.Tensor:
            out = cached.forward(0, plan, hs1, text)
            sync()
            return out

        # the counted runs double as warm-up (untimed)
        p.doing(f"cache ({mode}) active {a:.2f}: counting FLOPs")
        cached_flops, out_cached = count_flops(run_cached)
        p.advance()
        if dense_flops is None:
            dense_flops, _ = count_flops(lambda: dense(hs1))
            p.advance()
        outs: list[torch.Tensor] = []
        t_dense, t_cached = [], []
        for i in range(repeats):  # side by side, interleaved
            p.doing(f"cache ({mode}) active {a:.2f}: timing dense + cached {i + 1}/{repeats}")
            t_dense.append(_time(lambda: outs.append(dense(hs1))))
            t_cached.append(_time(run_cached))
            p.advance()
        out_dense = outs[0]
        d_ms, c_ms = statistics.median(t_dense), statistics.median(t_cached)
        rows.append({
            "active": a,
            "dense_ms": round(d_ms, 2),
            "cached_ms": round(c_ms, 2),
            "speedup": round(d_ms / max(c_ms, 1e-3), 2),  # a timer tick at most: never inf in JSON
            "flop_ratio": round(cached_flops / dense_flops, 4),
            "psnr_db": round(psnr(out_cached, out_dense, data_range=float(out_dense.max() - out_dense.min()),
                                   cap_db=PSNR_CAP_DB), 2),
        })
    shape_d = asdict(shape) | {
        "hidden": shape.hidden, "noise_tokens": layout.cells, "reference_tokens": layout.cells,
        "sequence": layout.length, "dense_gflop": round(dense_flops / 1e9, 2), "frame_gap": frame_gap,
        "repeats": repeats, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
    return {"device": device_label(dev), "mode": mode, "shape": shape_d, "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    s = result["shape"]
    lines = [
        f"spatial cache, {result['mode']} run"
        + (" (--full: 8 heads, 6 fractions, median of 3)" if result["mode"] == "quick" else "")
        + f", device: {result['device']}",
        f"shape: {s['width']}x{s['height']}, {s['noise_tokens']} noise + {s['reference_tokens']} reference + "
        f"{s['text_tokens']} text tokens, hidden {s['hidden']} ({s['heads']} heads x {s['head_dim']}), "
        f"{s['double_blocks']} double + {s['single_blocks']} single blocks, {s['dense_gflop']} GFLOP dense, "
        f"{s['dtype']}, median of {s['repeats']}",
        f"{'active':>6} {'dense ms':>10} {'cached ms':>10} {'speedup':>8} {'FLOP ratio':>10} {'PSNR dB':>8}",
    ]
    for r in result["rows"]:
        lines.append(f"{r['active']:>6.2f} {r['dense_ms']:>10.1f} {r['cached_ms']:>10.1f} {r['speedup']:>7.2f}x "
                     f"{r['flop_ratio']:>10.3f} {r['psnr_db']:>8.1f}")
    lines.append("PSNR: cached vs dense output of this random-weight model (capped at 100 dB); see vcam/tools/bench/cache.py")
    return "\n".join(lines)
