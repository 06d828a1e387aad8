"""`fluxrt-cam bench pipeline`: the daemon's own overhead, measured on the real processes.

Passthrough engine, synthetic source at 30 fps, the real pyvirtualcam Camera on a backend that drops the
frames (TimingBackend: it only notes when each was sent):
- added latency capture -> sink (p50/p95), output interval jitter (std) over the output window; per
  frame, for the histogram of `--plot`: the bench reads OUTPUT itself (capture_ts of each frame) and
  matches its frames to the backend's sends by a pixel fingerprint;
- shared-memory channel throughput (write + read of whole frames);
- scheduler CPU use when idle (engine paused, the camera still fed), and the whole daemon's;
- pacing: a fixed 8 frames/s engine with factor 4 (blend) shown at 32 fps: interval std and whether
  any engine frame was dropped or shown twice.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from vcam.shm import FrameChannel, FrameMeta
from vcam.tools.bench import BenchProgress, no_progress

if TYPE_CHECKING:  # the output process imports this module for TimingBackend: keep the daemon out of it
    from vcam.config import Config
    from vcam.daemon import Daemon

RESOLUTIONS = ((512, 512), (1280, 720))
SEND_LOG_ENV = "FLUXRT_BENCH_SEND_LOG"
FINGERPRINT_STRIDE = 997  # bytes; prime, so the samples walk over rows and channels


def fingerprint(frame: np.ndarray) -> int:
    """A cheap identity of a frame's pixels (a few thousand bytes of it): equal on both sides of the
    camera, distinct between consecutive frames of the moving synthetic scene."""
    return zlib.crc32(np.ascontiguousarray(frame.reshape(-1)[::FINGERPRINT_STRIDE]).data)


class TimingBackend:
    """A pyvirtualcam backend that drops frames like the null one, but appends "monotonic_time fingerprint"
    per frame sent to the file named by $FLUXRT_BENCH_SEND_LOG (nothing when it is unset). It runs in
    the daemon's output process: `output.camera_backend = "vcam.tools.bench.pipeline:TimingBackend"`."""

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: Any):
        path = os.environ.get(SEND_LOG_ENV)
        self._log = open(path, "a", buffering=1) if path else None
        self._device = device or "timing"

    def send(self, frame: np.ndarray) -> None:
        if self._log is not None:
            self._log.write(f"{time.monotonic():.6f} {fingerprint(frame)}\n")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


class OutputWatcher:
    """Notes capture_ts per fingerprint of every frame on the daemon's OUTPUT channel, from a thread of
    its own (a reader with its own cursor, as the preview stream has), while a window is measured."""

    def __init__(self, d: Daemon) -> None:
        self.capture_ts: dict[int, float] = {}
        self._channel = FrameChannel.attach(d.supervisor.output.spec)
        self._channel.read_new()  # from now on, not the backlog
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-output-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):  # OUTPUT holds several frames: 10 ms polls miss none at 30 fps
            frames, _lost = self._channel.read_new()
            for frame, meta in frames:
                self.capture_ts.setdefault(fingerprint(frame), meta.capture_ts)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._channel.close()


def latencies_ms(capture_ts: dict[int, float], send_log: Path) -> list[float]:
    """Capture -> sink milliseconds of each frame seen on OUTPUT and sent to the camera; a frame sent
    again (a repeat) counts at its first send."""
    first_send: dict[int, float] = {}
    for line in send_log.read_text().splitlines():
        ts, fp = line.split()
        first_send.setdefault(int(fp), float(ts))
    return [round((first_send[fp] - ts) * 1000, 3) for fp, ts in capture_ts.items() if fp in first_send]


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
    from vcam.config import load_config

    overrides: dict[str, Any] = {
        "engine.name": "passthrough", "engine.width": width, "engine.height": height,
        "source.kind": "synthetic", "source.fps": fps, "source.capture_width": 1280, "source.capture_height": 720,
        "interpolation.method": "none", "output.fps": fps, "output.virtual_camera": "on",
        "output.camera_backend": f"{__name__}:TimingBackend", "output.preview": False, "control.enabled": False, "log_level": "warning",
    }
    # the camera at the size under test, not its own 1280x720: a row measures that size end to end (no
    # scaling), and the camera gets OUTPUT's frames unchanged, so the latency samples match them
    overrides.update({"output.width": width, "output.height": height})
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


def measure_resolution(width: int, height: int, fps: float, seconds: float,
                       progress: BenchProgress | None = None, samples: list[float] | None = None) -> dict[str, Any]:
    """One resolution's row (5 progress steps); each frame's capture -> sink ms are added to `samples`."""
    from vcam.daemon import Daemon

    p = progress or no_progress()
    res = f"{width}x{height}"
    with tempfile.TemporaryDirectory(prefix="fluxrt-bench-") as tmp:
        send_log = Path(tmp) / "sends.txt"
        send_log.touch()
        old = os.environ.get(SEND_LOG_ENV)
        os.environ[SEND_LOG_ENV] = str(send_log)  # the children are spawned with this environment
        p.doing(f"pipeline {res}: starting the daemon")
        try:
            d = Daemon(_config(width, height, fps))
            d.start()
            try:
                _wait_for_frames(d)
                p.advance()
                p.wait(1.0, f"pipeline {res}: warm-up 1 s")
                d.supervisor.reset_output_stats()  # measure the steady state only
                watcher = OutputWatcher(d)
                try:
                    p.wait(seconds, f"pipeline {res}: latency and jitter, {seconds:g} s")
                finally:
                    watcher.stop()  # before the idle window: its polls would count as the daemon's CPU
                out = d.status()["output"]
                d.state.update(mode="paused")
                time.sleep(0.5)
                pids = [os.getpid(), d.status()["inference"]["pid"], out["pid"]]
                p.doing(f"pipeline {res}: idle CPU, 3 s")
                idle, daemon_idle = _cpu_pct(out["pid"], pids, 3.0)
                p.advance()
            finally:
                d.stop()
        finally:
            if old is None:
                os.environ.pop(SEND_LOG_ENV, None)
            else:
                os.environ[SEND_LOG_ENV] = old
        if samples is not None:
            samples.extend(latencies_ms(watcher.capture_ts, send_log))
    p.doing(f"pipeline {res}: channel throughput")
    gbps = channel_throughput(width, height)
    p.advance()
    return {
        "resolution": f"{width}x{height}", "fps": fps,
        "latency_p50_ms": out["latency_p50_ms"], "latency_p95_ms": out["latency_p95_ms"],
        "jitter_std_ms": out["interval_std_ms"],
        "channel_gbps": gbps,
        "idle_cpu_pct": idle,
        "daemon_idle_cpu_pct": daemon_idle,
    }


def measure_pacing(engine_fps: float = 8.0, factor: int = 4, seconds: float = 10.0,
                   progress: BenchProgress | None = None) -> dict[str, Any]:
    """A fixed-rate engine (the source paces it) with `factor` interpolation shown at engine_fps*factor
    (4 progress steps)."""
    from vcam.daemon import Daemon

    p = progress or no_progress()
    out_fps = engine_fps * factor
    cfg = _config(512, 512, engine_fps, **{"output.fps": out_fps, "interpolation.method": "blend",
                                            "interpolation.factor": factor})
    p.doing("pacing: starting the daemon")
    d = Daemon(cfg)
    d.start()
    try:
        _wait_for_frames(d)
        p.advance()
        time.sleep(1.0)
        p.doing("pacing: draining (source paused)")
        start = _settled_counts(d)  # source paused, pipeline drained: made and shown are exact here
        p.advance()
        d.capture.pause(False)
        time.sleep(1.0)
        d.supervisor.reset_output_stats()
        a = d.status()
        p.wait(seconds, f"pacing: {engine_fps:g} fps x{factor}, {seconds:g} s")
        b = d.status()
        p.doing("pacing: draining (source paused)")
        end = _settled_counts(d)
        p.advance()
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
              resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS, progress: BenchProgress | None = None,
              latency_samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The JSON result; each resolution's per-frame capture -> sink ms go to `latency_samples` (keyed by
    "WxH"), kept out of the JSON for its size."""
    p = progress or no_progress()
    p.start(5 * len(resolutions) + 4, "pipeline")
    results = []
    for w, h in resolutions:
        samples: list[float] = []
        results.append(measure_resolution(w, h, fps, seconds, p, samples))
        if latency_samples is not None:
            latency_samples[f"{w}x{h}"] = samples
    return {"device": "cpu", "results": results, "pacing": measure_pacing(seconds=pacing_seconds, progress=p)}


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
