"""`fluxrt-cam bench pipeline`: the daemon's own overhead, measured on the real processes.

Passthrough engine, synthetic source at 30 fps, the real pyvirtualcam Camera on a null backend:
- added latency capture -> sink (p50/p95), output interval jitter (std) over the output window;
- shared-memory channel throughput (write + read of whole frames);
- scheduler CPU use when idle (engine paused, the camera still fed), and the whole daemon's;
- pacing: a fixed 8 frames/s engine with factor 4 (blend) shown at 32 fps: interval std and whether
  any engine frame was dropped or shown twice.
"""
from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import psutil

from vcam.config import Config, load_config
from vcam.daemon import Daemon
from vcam.shm import FrameChannel, FrameMeta

RESOLUTIONS = ((512, 512), (1280, 720))


def channel_throughput(width: int, height: int, seconds: float = 0.5) -> float:
    """GB/s of frames moved through a channel (each frame written once and read once)."""
    ch = FrameChannel.create("bench", width, height, slots=3)
    reader = FrameChannel.attach(ch.spec)
    frame = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = np.empty_like(frame)
    n = 0
    try:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ch.write(frame, FrameMeta(n, time.monotonic()))
            assert reader.read_latest(out) is not None
            n += 1
        dt = time.perf_counter() - t0
    finally:
        reader.close()
        ch.close()
    return n * frame.nbytes / dt / 1e9


def _config(width: int, height: int, fps: float, **extra: Any) -> Config:
    overrides = {
        "engine.name": "passthrough", "engine.width": width, "engine.height": height,
        "source.kind": "synthetic", "source.fps": fps, "source.capture_width": 1280, "source.capture_height": 720,
        "interpolation.method": "none", "output.fps": fps, "output.virtual_camera": "on",
        "output.camera_backend": "null", "output.preview": False, "control.enabled": False, "log_level": "warning",
    }
    overrides.update(extra)
    return load_config(None, overrides)


def _wait_for_frames(d: Daemon, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.status()["output"].get("new", 0) > 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the daemon produced no frame in {timeout:.0f} s: {d.status()}")


def _cpu_pct(pid: int, pids: list[int], seconds: float) -> tuple[float, float]:
    """CPU use (% of one core) of process `pid` and of all `pids` together over `seconds`.
    (This benchmark's own thread sleeps meanwhile, so the supervisor's share is the daemon's.)"""
    procs = [psutil.Process(p) for p in pids]
    c0 = [sum(p.cpu_times()[:2]) for p in procs]
    t0 = time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    used = [sum(p.cpu_times()[:2]) - c for p, c in zip(procs, c0)]
    return used[pids.index(pid)] / dt * 100, sum(used) / dt * 100


def measure_resolution(width: int, height: int, fps: float, seconds: float) -> dict[str, Any]:
    d = Daemon(_config(width, height, fps))
    d.start()
    try:
        _wait_for_frames(d)
        time.sleep(1.0)  # warm-up
        d.supervisor.reset_output_stats()  # measure the steady state only
        time.sleep(seconds)
        out = d.status()["output"]
        d.state.update(mode="paused")
        time.sleep(0.5)
        pids = [os.getpid(), d.status()["inference"]["pid"], out["pid"]]
        idle, daemon_idle = _cpu_pct(out["pid"], pids, 3.0)
    finally:
        d.stop()
    return {
        "resolution": f"{width}x{height}", "fps": fps,
        "latency_p50_ms": out["latency_p50_ms"], "latency_p95_ms": out["latency_p95_ms"],
        "jitter_std_ms": out["interval_std_ms"],
        "channel_gbps": channel_throughput(width, height),
        "idle_cpu_pct": idle,
        "daemon_idle_cpu_pct": daemon_idle,
    }


def measure_pacing(engine_fps: float = 8.0, factor: int = 4, seconds: float = 10.0) -> dict[str, Any]:
    """A fixed-rate engine (the source paces it) with `factor` interpolation shown at engine_fps*factor."""
    out_fps = engine_fps * factor
    cfg = _config(512, 512, engine_fps, **{"output.fps": out_fps, "interpolation.method": "blend",
                                            "interpolation.factor": factor})
    d = Daemon(cfg)
    d.start()
    try:
        _wait_for_frames(d)
        time.sleep(1.0)
        start = _settled_counts(d)  # source paused, pipeline drained: made and shown are exact here
        d.capture.pause(False)
        time.sleep(1.0)
        d.supervisor.reset_output_stats()
        a = d.status()
        time.sleep(seconds)
        b = d.status()
        end = _settled_counts(d)
    finally:
        d.stop()
    o0, o1 = a["output"], b["output"]
    delta = {k: o1[k] - o0[k] for k in ("repeats", "dropped_interpolated", "lost")}
    return {
        "engine_fps": engine_fps, "factor": factor, "output_fps": out_fps, "seconds": seconds,
        "interval_mean_ms": o1["interval_mean_ms"], "interval_std_ms": o1["interval_std_ms"],
        **{k: end[k] - start[k] for k in ("engine_frames_made", "engine_frames_received", "engine_frames_shown")},
        "repeated_frames": delta["repeats"], "dropped_interpolated": delta["dropped_interpolated"],
        "lost_frames": delta["lost"],
    }


def _settled_counts(d: Daemon, timeout: float = 15.0) -> dict[str, int]:
    """Pause the source and wait until the engine frames made, received and shown stop changing.

    Children report every 0.5 s, each at its own phase: counts read while frames flow are up to half a
    second stale, and differently so for the inference and the output process (+-4 frames at 8 fps).
    With the source paused every frame made reaches the camera, so counts read once they stand still are
    exact and comparable; the window between two such readings is then measured exactly."""
    d.capture.pause(True)
    last: dict[str, int] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.75)  # longer than a report interval: a change since the last look would show
        s = d.status()
        now = {"engine_frames_made": s["inference"]["frames"], "engine_frames_received": s["output"]["groups"],
               "engine_frames_shown": s["output"]["engine_frames_shown"]}
        if now == last:
            return now
        last = now
    raise RuntimeError(f"frame counts did not settle within {timeout:.0f} s of pausing the source: {last}")


def run_bench(seconds: float = 5.0, pacing_seconds: float = 10.0, fps: float = 30.0,
              resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS) -> dict[str, Any]:
    results = [measure_resolution(w, h, fps, seconds) for w, h in resolutions]
    return {"device": "cpu", "results": results, "pacing": measure_pacing(seconds=pacing_seconds)}


def format_table(r: dict[str, Any]) -> str:
    lines = [f"{'resolution':>10} {'fps':>4} {'lat p50':>8} {'lat p95':>8} {'jitter':>7} {'channel':>10} "
             f"{'idle cpu':>9} {'(daemon)':>9}"]
    for x in r["results"]:
        lines.append(f"{x['resolution']:>10} {x['fps']:>4.0f} {x['latency_p50_ms']:>6.2f}ms {x['latency_p95_ms']:>6.2f}ms "
                     f"{x['jitter_std_ms']:>5.2f}ms {x['channel_gbps']:>6.2f}GB/s {x['idle_cpu_pct']:>8.2f}% "
                     f"{x['daemon_idle_cpu_pct']:>8.2f}%")
    p = r["pacing"]
    lines.append(f"pacing: {p['engine_fps']:.0f} engine fps x{p['factor']} (blend) -> {p['output_fps']:.0f} fps over "
                 f"{p['seconds']:.0f} s: interval {p['interval_mean_ms']:.2f} ms, std {p['interval_std_ms']:.2f} ms; "
                 f"engine frames {p['engine_frames_made']} made, {p['engine_frames_shown']} shown, "
                 f"{p['repeated_frames']} repeats, {p['dropped_interpolated']} interpolated dropped, {p['lost_frames']} lost")
    return "\n".join(lines)
