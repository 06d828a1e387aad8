"""The control API's local web page (GET /) and the figures its charts draw.

The page is `vcam/static/index.html` with its stylesheet and scripts (`page.css`, `chart.js`, `page.js`)
written into it: one self-contained document that needs nothing from the network (it also works as an
OBS browser dock on a machine offline) and holds no secret, so it is served without the token. Everything
it shows comes from /api, /ws and the picture routes; with a token in force the page asks for it on the
first 401 (or takes `/?token=<token>` once) and keeps it in the tab's sessionStorage.

`StatusHistory` keeps the charts' figures of the last minutes on the server, so a reloaded page starts
with its charts filled. It samples the status whenever somebody asks for it (the page's WebSocket does
every second), so it covers the time the page, or `fluxrt-cam status`, was watching.
"""
from __future__ import annotations

import functools
import math
import re
import threading
from collections import deque
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent.parent / "static"
_INLINED = re.compile(r"\{\{([a-z]+\.(?:css|js))\}\}")


@functools.cache
def page_html() -> str:
    """index.html with each `{{file}}` replaced by that file of vcam/static (read once per process)."""
    return _INLINED.sub(lambda m: (STATIC / m.group(1)).read_text(encoding="utf-8"),
                        (STATIC / "index.html").read_text(encoding="utf-8"))


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def chart_sample(status: dict[str, Any]) -> dict[str, float | None] | None:
    """The charts' figures in one daemon status (page.js chartSample makes the same in the browser);
    None when the status has no uptime to place them on. The x axis is the daemon's uptime, not a wall
    clock, so the browser's and the daemon's clocks need not agree."""
    t = _number(status.get("uptime_s"))
    if t is None:
        return None
    out, inf = status.get("output") or {}, status.get("inference") or {}
    interval = _number(out.get("interval_mean_ms"))
    return {"t": t, "output_fps": 1000.0 / interval if interval else None,
            "engine_fps": _number(inf.get("engine_fps")),
            "latency_p50_ms": _number(out.get("latency_p50_ms")), "latency_p95_ms": _number(out.get("latency_p95_ms")),
            "active_fraction": _number((inf.get("cache") or {}).get("active_fraction"))}


class StatusHistory:
    """The last `keep_s` seconds of chart samples, at most one per `every_s` (several pages and
    `status` calls asking at once add one sample, not one each)."""

    def __init__(self, keep_s: float = 300.0, every_s: float = 0.9):
        self.keep_s, self.every_s = keep_s, every_s
        self._lock = threading.Lock()  # WebSocket pushes sample from the threadpool
        self._samples: deque[dict[str, float | None]] = deque(maxlen=int(keep_s / every_s) + 2)

    def add(self, status: dict[str, Any]) -> None:
        sample = chart_sample(status)
        if sample is None:
            return
        t = sample["t"] or 0.0
        with self._lock:
            if self._samples and t < (self._samples[-1]["t"] or 0.0) + self.every_s:
                return
            self._samples.append(sample)
            while self._samples and (self._samples[0]["t"] or 0.0) < t - self.keep_s:
                self._samples.popleft()

    def samples(self) -> list[dict[str, float | None]]:
        with self._lock:
            return list(self._samples)
