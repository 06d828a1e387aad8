"""`fluxrt-cam bench engine`: per-stage milliseconds and frames/s of the configured engine on this device.

Frames are a natural photo (scikit-image's astronaut) shifted a few pixels per frame, like a webcam; the
prompt stays the same, so the text encoder runs in the warm-up only. Medians over the timed frames.
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from vcam.tools.bench import BenchProgress, device_label, no_progress

STAGES = ("prepare", "denoise", "decode")


def frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """`count` RGB uint8 frames: the astronaut photo cover-resized to width x height, drifting 2 px a frame."""
    import cv2
    from skimage import data

    img = data.astronaut()
    scale = max(width / img.shape[1], height / img.shape[0]) * 1.1  # margin for the drift
    big = cv2.resize(img, (int(img.shape[1] * scale) + 1, int(img.shape[0] * scale) + 1), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(count):
        dx = (2 * i) % max(1, big.shape[1] - width)
        out.append(np.ascontiguousarray(big[:height, dx:dx + width]))
    return out


def run_engine(engine, *, width: int, height: int, steps: int, prompt: str, seed: int = 0, frames_n: int = 3,
               warmup: int = 1, model: str = "", notes: list[str] | None = None,
               progress: BenchProgress | None = None) -> dict[str, Any]:
    """Time `engine.edit` on `frames_n` frames after `warmup` frames; the issue's JSON shape. Facts that are not
    part of that shape (the spatial cache's active fraction) are appended to `notes` for the table.
    `progress` advances one step per frame; its total is the caller's to set (`run` does)."""
    if frames_n < 1 or warmup < 0:
        raise ValueError("frames must be >= 1 and warmup >= 0")
    p = progress or no_progress()
    stream = frames(width, height, warmup + frames_n)
    for i, f in enumerate(stream[:warmup]):
        p.doing(f"engine: warm-up frame {i + 1}/{warmup}")
        engine.edit(f, prompt=prompt, seed=seed, steps=steps)
        p.advance()
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    active: list[float] = []
    for i, f in enumerate(stream[warmup:]):
        p.doing(f"engine: timed frame {i + 1}/{frames_n}")
        t0 = time.perf_counter()
        engine.edit(f, prompt=prompt, seed=seed, steps=steps)
        totals.append((time.perf_counter() - t0) * 1000.0)
        for s in STAGES:
            per_stage[s].append(float(engine.stats.stages_ms.get(s, 0.0)))
        if "active_fraction" in engine.stats.cache:
            active.append(float(engine.stats.cache["active_fraction"]))
        p.advance()
    total = statistics.median(totals)
    if notes is not None:
        notes.append(f"spatial cache: on, median active fraction {statistics.median(active):.2f} (frames drift 2 px)"
                     if active else "spatial cache: off")
    return {
        "device": device_label(getattr(engine, "info", {}).get("device", "cpu")),
        "model": model or getattr(engine, "name", "engine"),
        "resolution": f"{width}x{height}",
        "steps": steps,
        "stages_ms": {s: round(statistics.median(v), 2) for s, v in per_stage.items()},
        "engine_fps": round(1000.0 / total, 3) if total > 0 else float("inf"),
    }


def run(cfg, *, frames_n: int = 3, warmup: int = 1, tiny_preset: str | None = None,
        notes: list[str] | None = None, progress: BenchProgress | None = None) -> dict[str, Any]:
    """Build the configured engine (engine.name, "auto" resolved) and time it."""
    from engine import create_engine
    from vcam.inference.engine_choice import auto_engine, engine_options

    name, _why = auto_engine(cfg.engine)
    e = cfg.engine
    tiny: dict[str, Any] = {}
    model = name
    if name == "flux2-tiny":
        from engine.flux2.tiny import DEFAULT_PRESET, PRESETS

        preset = tiny_preset or (e.model if e.model in PRESETS else DEFAULT_PRESET)
        tiny["tiny_preset"] = preset
        model = f"flux2-tiny ({preset})"
    elif name == "flux2":
        model = f"flux2 ({e.model})"
    p = progress or no_progress()
    p.start(1 + warmup + frames_n, f"engine: building {model}")
    engine = create_engine(name, engine_options(cfg), **tiny)
    p.advance()
    try:
        return run_engine(engine, width=e.width, height=e.height, steps=e.steps, prompt=cfg.prompt.text, seed=e.seed,
                          frames_n=frames_n, warmup=warmup, model=model, notes=notes, progress=p)
    finally:
        engine.close()


def table(r: dict[str, Any], notes: list[str] | None = None) -> str:
    s = r["stages_ms"]
    rows = [f"engine benchmark on {r['device']}: {r['model']}, {r['resolution']}, {r['steps']} steps",
            f"{'stage':<10}{'ms (median)':>14}"]
    rows += [f"{k:<10}{v:>14.1f}" for k, v in s.items()]
    rows.append(f"{'total':<10}{sum(s.values()):>14.1f}")
    rows.append(f"engine fps: {r['engine_fps']:.3f}")
    return "\n".join(rows + list(notes or []))
