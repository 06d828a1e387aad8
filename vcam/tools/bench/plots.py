"""The figures of `fluxrt-cam bench cache|pipeline|interp --plot FILE.png`.

matplotlib draws on its Agg canvas directly (no pyplot, so no global backend or open-figure state and no
display needed); the CLI imports this module only when a plot is asked for. Each benchmark turns its
result into panels; `save_figure` is the one place that draws them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float] = ()  # a histogram has none
    style: str = "o-"  # matplotlib's format string (lines and points)


@dataclass(frozen=True)
class Panel:
    xlabel: str
    ylabel: str
    series: Sequence[Series]
    kind: Literal["lines", "hist"] = "lines"
    log_x: bool = False
    log_y: bool = False
    bins: int = 40


def save_figure(path: Path, title: str, panels: Sequence[Panel]) -> Figure:
    """Panels stacked in one PNG at `path`; the Figure is returned (its axes' labels can be checked)."""
    fig = Figure(figsize=(7.0, 1.0 + 3.2 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, panel in zip(fig.subplots(len(panels), 1, squeeze=False)[:, 0], panels):
        if panel.kind == "hist":
            # shared bin edges: the series are compared bin by bin
            edges = np.histogram_bin_edges(np.concatenate([np.asarray(s.x, float) for s in panel.series]),
                                           bins=panel.bins)
            for s in panel.series:
                ax.hist(s.x, bins=edges, alpha=0.55, label=s.label)
        else:
            for s in panel.series:
                ax.plot(s.x, s.y, s.style, label=s.label)
        ax.set(xlabel=panel.xlabel, ylabel=panel.ylabel)
        if panel.log_x:
            ax.set_xscale("log")
        if panel.log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        if len(panel.series) > 1:
            ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return fig


def cache_figure(result: dict[str, Any], path: Path) -> Figure:
    """Speedup, and FLOPs and time as fractions of dense, against the active fraction."""
    rows = result["rows"]
    active = [r["active"] for r in rows]
    speedup = Panel("active fraction (cells recomputed / all cells)", "speedup (dense ms / cached ms, log)", [
        Series("measured speedup", active, [r["speedup"] for r in rows]),
        Series("break-even (1x)", [0.0, 1.0], [1.0, 1.0], style="k--"),
    ], log_y=True)
    ratios = Panel("active fraction (cells recomputed / all cells)", "cached / dense", [
        Series("FLOP ratio", active, [r["flop_ratio"] for r in rows]),
        Series("time ratio (cached ms / dense ms)", active, [r["cached_ms"] / r["dense_ms"] for r in rows], "s-"),
    ])
    s = result["shape"]
    return save_figure(path, f"bench cache ({result['mode']}): {s['width']}x{s['height']}, hidden {s['hidden']}, "
                             f"{s['dtype']}\n{result['device']}", [speedup, ratios])


def pipeline_figure(result: dict[str, Any], latency_samples: dict[str, list[float]], path: Path) -> Figure:
    """Histogram of each frame's capture -> virtual camera latency, one series per resolution."""
    fps = {r["resolution"]: r["fps"] for r in result["results"]}
    series = [Series(f"{res} at {fps.get(res, 0):g} fps ({len(ms)} frames)", ms)
              for res, ms in latency_samples.items() if ms]
    if not series:
        raise ValueError("no latency samples to plot (no frame was matched between OUTPUT and the camera)")
    panel = Panel("latency capture -> virtual camera (ms)", "frames", series, kind="hist")
    return save_figure(path, f"bench pipeline: added latency, passthrough engine\n{result['device']}", [panel])


def interp_figure(result: dict[str, Any], path: Path) -> Figure:
    """One point per interpolator: quality against time (methods that could not run are left out)."""
    # a time rounded to 0.00 ms (blend on a small frame) would vanish from the log axis
    series = [Series(r["method"], [max(r["ms_per_frame"], 0.01)], [r["psnr_db"]], style="o")
              for r in result["rows"] if r["ms_per_frame"] is not None]
    if not series:
        raise ValueError("no interpolator ran: nothing to plot")
    panel = Panel("time per interpolated frame (ms, log)", f"PSNR vs true midpoint t={result['timestep']} (dB)",
                  series, log_x=True)
    return save_figure(path, f"bench interp: {result['resolution']}, {len(result['cases'])} cases\n"
                             f"{result['device']}", [panel])
