"""`fluxrt-cam bench interp`: speed and quality of each interpolator on the synthetic motion set.

Every method interpolates the midpoint of every case at the bench resolution: the median time of those
calls (after one warm-up call) is `ms_per_frame`, the mean PSNR against the rendered true midpoint over
the non-periodic cases is `psnr_db`; the periodic case is reported apart (`psnr_periodic_db`).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vcam.tools.bench import BenchProgress, device_label, no_progress

METHODS = ("rife-v4.25", "rife-v3-hd", "flow", "blend")


def run(*, size: int = 512, methods: Sequence[str] = METHODS, cases: int | None = None, device: str = "cpu",
        models_dir: Path | None = None, t: float = 0.5, progress: BenchProgress | None = None) -> dict[str, Any]:
    """Measure each method; `cases` limits the non-periodic cases (the periodic one is always added)."""
    from engine.image import psnr
    from engine.interp import InterpolatorUnavailable, create_interpolator
    from engine.interp.motion_set import CASES, render

    if size < 32:
        raise ValueError(f"size must be >= 32 pixels, got {size}")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = [c for c in CASES if not c.periodic][: cases if cases is not None else None]
    if not chosen:
        raise ValueError(f"cases must be >= 1, got {cases}")
    chosen += [c for c in CASES if c.periodic]
    p = progress or no_progress()
    # steps: rendering the cases, then per method its warm-up (with the build) and one per case
    p.start(1 + len(methods) * (1 + len(chosen)), f"interp: rendering {len(chosen)} cases at {size}x{size}")
    scenes = [(c, render(c, 0.0, size), render(c, t, size), render(c, 1.0, size)) for c in chosen]
    p.advance()
    rows: list[dict[str, Any]] = []
    for method in methods:
        p.doing(f"interp {method}: loading, warm-up")
        try:
            interp = create_interpolator(method, device=device, models_dir=models_dir)
        except InterpolatorUnavailable as e:  # weights missing or broken: say so instead of timing nothing
            rows.append({"method": method, "ms_per_frame": None, "psnr_db": None, "note": str(e)})
            p.advance(1 + len(scenes))
            continue
        _, a0, _, b0 = scenes[0]
        interp.interpolate_numpy(a0, b0, [t])  # warm-up: allocator, oneDNN kernels, OpenCV pools
        p.advance()
        times, scores, periodic = [], [], []
        for case, a, truth, b in scenes:
            p.doing(f"interp {method}: {case.name}")
            t0 = time.perf_counter()
            out = interp.interpolate_numpy(a, b, [t])[0]
            times.append(time.perf_counter() - t0)
            (periodic if case.periodic else scores).append(psnr(out, truth))
            p.advance()
        rows.append({"method": method, "ms_per_frame": round(1000 * statistics.median(times), 2),
                     "psnr_db": round(float(np.mean(scores)), 2),
                     "psnr_periodic_db": round(float(np.mean(periodic)), 2) if periodic else None})
    return {"device": device_label(device), "resolution": f"{size}x{size}", "timestep": t,
            "cases": [c.name for c in chosen if not c.periodic],
            "periodic_cases": [c.name for c in chosen if c.periodic], "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [f"interpolation at {result['resolution']} on {result['device']}; PSNR at t={result['timestep']} "
             f"over {len(result['cases'])} cases (periodic case apart, not a quality target)",
             f"{'method':<12} {'ms/frame':>9} {'PSNR dB':>8} {'periodic':>9} {'vs blend':>9}"]
    base = next((r["psnr_db"] for r in rows if r["method"] == "blend" and r["psnr_db"] is not None), None)
    for r in rows:
        if r["psnr_db"] is None:
            lines.append(f"{r['method']:<12} {'-':>9} {'-':>8} {'-':>9} {'-':>9}   {r.get('note', '')}")
            continue
        gap = f"{r['psnr_db'] - base:+.2f}" if base is not None else "-"
        per = f"{r['psnr_periodic_db']:.2f}" if r.get("psnr_periodic_db") is not None else "-"
        lines.append(f"{r['method']:<12} {r['ms_per_frame']:>9.1f} {r['psnr_db']:>8.2f} {per:>9} {gap:>9}")
    flow = next((r for r in rows if r["method"] == "flow" and r["psnr_db"] is not None), None)
    for r in rows:
        if r["method"].startswith("rife") and r["psnr_db"] is not None and flow is not None:
            lines.append(f"{r['method']} vs flow: {r['psnr_db'] - flow['psnr_db']:+.2f} dB, "
                         f"{r['ms_per_frame'] / max(flow['ms_per_frame'], 1e-6):.1f}x the time")
    return "\n".join(lines)
