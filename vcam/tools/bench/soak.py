"""`fluxrt-cam bench soak`: the real daemon under a steady load and regular faults, watched for leaks.

The daemon runs in this process (supervisor, capture thread, control server, stream), its children as
processes, as `fluxrt-cam run` runs them: engine flux2-tiny (or passthrough), interpolation flow, the
synthetic source. Meanwhile this process plays the users: a few viewers on /stream.mjpg (raw sockets,
`vcam.tools.bench.stream`), a client that changes the prompt every second through the control API,
and one kill -9 per minute, alternating the inference and the output child.

Reported (JSON): RSS, open files and threads of the supervisor and of the whole process tree at the end
of the warm-up and at the end, and their growth; the camera's frame intervals (p50/p99/max) from every
frame it was sent; restarts per child; frames lost by the output process and by the stream; frames
sent; prompt changes applied; viewer fps.

The camera is a pyvirtualcam backend defined here (`SendTimesBackend`) that appends each send time to
a file: the output process's own status keeps interval statistics of its last 10 s only, and they
restart with each process, while a soak needs every interval of the run, across takeovers.

Caveats: this process is also the viewers' and the prompt client's (a few MB, stable), and RSS counts
the shared-memory channels once per process that maps them; the growth figures are what matter.
"""
from __future__ import annotations

import asyncio
import math
import os
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

# Kept light on purpose: the output process imports this module for `SendTimesBackend`.

SEND_TIMES_ENV = "FLUXRT_SOAK_SEND_TIMES"
BACKEND = "vcam.tools.bench.soak:SendTimesBackend"
ENGINES = ("flux2-tiny", "passthrough", "flux2", "auto")
TICK_S = 0.25  # the main loop's pace: status polls, kills, progress
PROMPT_EVERY_S = 1.0
WARMUP_MAX_S = 60.0
WARMUP_FRACTION = 0.25
START_TIMEOUT_S = 300.0  # the first flux2-tiny use builds the model offline (minutes on a busy 2-core machine)
SETTLE_TIMEOUT_S = 120.0  # after the run: a child killed near the end is back before the last sample
PROMPTS = ("a watercolor painting, soft pastel colors", "anime style illustration, clean line art",
           "cyberpunk city at night, neon lights, rain", "an oil painting in the style of the old masters")


# ---- the camera: a pyvirtualcam backend recording send times (runs in the output processes) ------------
class SendTimesBackend:
    """Appends each frame's send time (CLOCK_MONOTONIC, a little-endian double) to the file named by
    $FLUXRT_SOAK_SEND_TIMES. O_APPEND and 8-byte writes: the serving and the standby output process
    share the file without tearing each other's records, and a kill -9 cannot leave half of one."""

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object):
        self._fd = os.open(os.environ[SEND_TIMES_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._device = device or "soak"

    def send(self, frame: np.ndarray) -> None:
        os.write(self._fd, struct.pack("<d", time.monotonic()))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


def read_send_times(path: Path, t0: float, t1: float) -> np.ndarray:
    """Sorted send times within [t0, t1] (two output processes may have appended around a takeover)."""
    ts = np.fromfile(path, dtype="<f8") if path.exists() else np.empty(0)
    return np.sort(ts[(ts >= t0) & (ts <= t1)])


def interval_stats(ts: np.ndarray, fps: float) -> dict[str, Any]:
    iv = np.diff(ts) * 1000
    nominal = 1000 / fps
    if iv.size == 0:
        return {"p50": None, "p99": None, "max": None, "nominal": round(nominal, 2), "over_2x_nominal": 0}
    return {"p50": round(float(np.percentile(iv, 50)), 2), "p99": round(float(np.percentile(iv, 99)), 2),
            "max": round(float(iv.max()), 1), "nominal": round(nominal, 2),
            "over_2x_nominal": int((iv > 2 * nominal).sum())}


# ---- resources of the process tree ------------------------------------------------------------------
@dataclass(frozen=True)
class Usage:
    rss_mb: float
    open_files: int  # file descriptors (sockets, pipes and shared memory included)
    threads: int


@dataclass(frozen=True)
class Snapshot:
    at_s: float  # seconds into the run
    supervisor: Usage
    daemon: Usage  # the supervisor and every process below it, summed
    processes: int
    semaphores: int  # multiprocessing's named semaphores of this process in /dev/shm (queues, doorbells)


def _usage(procs: list[psutil.Process]) -> tuple[Usage, int]:
    rss = fds = threads = alive = 0
    for p in procs:
        try:
            with p.oneshot():
                rss += p.memory_info().rss
                fds += p.num_fds()
                threads += p.num_threads()
            alive += 1
        except (psutil.NoSuchProcess, psutil.ZombieProcess):  # ended between the listing and the reading
            continue
    return Usage(round(rss / 2**20, 1), fds, threads), alive


def _own_semaphores() -> int:
    from vcam.shm import segment_owner

    me = os.getpid()
    return sum(1 for f in os.listdir("/dev/shm") if f.startswith("sem.") and segment_owner(f) == me)


def snapshot(at_s: float) -> Snapshot:
    me = psutil.Process()
    sup, _ = _usage([me])
    tree, n = _usage([me, *me.children(recursive=True)])
    return Snapshot(round(at_s, 1), sup, tree, n, _own_semaphores())


def growth(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    def three(x: float, y: float) -> dict[str, float]:
        return {"warm": x, "end": y, "growth": round(y - x, 1)}

    out: dict[str, Any] = {}
    for who in ("supervisor", "daemon"):
        ua, ub = getattr(a, who), getattr(b, who)
        out[who] = {"rss_mb": three(ua.rss_mb, ub.rss_mb), "open_files": three(ua.open_files, ub.open_files),
                    "threads": three(ua.threads, ub.threads)}
    out["daemon"]["processes"] = three(a.processes, b.processes)
    out["semaphores"] = three(a.semaphores, b.semaphores)
    out["warm_at_s"], out["end_at_s"] = a.at_s, b.at_s
    return out


# ---- the users: viewers and a prompt client, on threads of this process ---------------------------------
class Viewers:
    """`n` viewers of /stream.mjpg on one asyncio loop in a thread; counts their parts."""

    def __init__(self, port: int, n: int):
        self.port, self.n = port, n
        self.viewers: list[Any] = []
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-viewers", daemon=True)

    def start(self, timeout: float = 30.0) -> "Viewers":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the viewers did not connect within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"the viewers could not connect: {self.error}") from self.error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported by start() or in the result
            self.error = e
            self._ready.set()

    async def _main(self) -> None:
        from vcam.tools.bench.stream import open_viewer

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.viewers = list(await asyncio.gather(*(open_viewer(self.port) for _ in range(self.n))))
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for v in self.viewers:
                v.close()

    def parts(self) -> list[int]:
        return [v.parts for v in self.viewers]

    def dropped(self) -> int:
        """Viewers whose stream the server ended (the stream lives in the supervisor: it should not)."""
        return sum(v.closed for v in self.viewers)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has already ended
                pass
        self._thread.join(10)


class PromptChanger:
    """Sets a new prompt every `every` seconds through the control API, as a user or a script would."""

    def __init__(self, url: str, every: float = PROMPT_EVERY_S):
        self.url, self.every = url, every
        self.sent = self.failed = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-prompts", daemon=True)

    def start(self) -> "PromptChanger":
        self._thread.start()
        return self

    def _run(self) -> None:
        from vcam.control.client import DaemonClient

        with DaemonClient(self.url, timeout=5.0) as client:
            i = 0
            while not self._stop.wait(self.every):
                try:
                    client.set_prompt(f"{PROMPTS[i % len(PROMPTS)]}, take {i}")
                    self.sent += 1
                except Exception as e:  # noqa: BLE001 - counted and reported; the soak goes on
                    self.failed += 1
                    self.last_error = f"{type(e).__name__}: {e}"
                i += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ---- the daemon ---------------------------------------------------------------------------------------
def soak_config(engine: str, width: int, height: int) -> Any:
    from vcam.config import load_config

    return load_config(None, {
        "engine.name": engine, "engine.width": width, "engine.height": height,
        "source.kind": "synthetic", "interpolation.method": "flow",
        "output.virtual_camera": "on", "output.camera_backend": BACKEND, "output.preview": True,
        "control.enabled": True, "control.host": "127.0.0.1", "control.port": 0, "obs.enabled": False,
        "log_level": "warning",
    })


def child_ready(st: dict[str, Any], role: str) -> bool:
    """The child runs (the inference process has made its first edit); the output has its standby waiting."""
    c = st[role]
    # the heartbeat's phase: a restarted child's last reported values linger until it reports again
    if not (c.get("alive") and c.get("heartbeat_phase") == "running"):
        return False
    return role != "output" or (c.get("standby", {}).get("phase") == "standby" and bool(c.get("sinks")))


def all_ready(st: dict[str, Any]) -> bool:
    return child_ready(st, "inference") and child_ready(st, "output") and st["output"].get("new", 0) > 0


def kill_times(duration: float) -> list[float]:
    """One kill per minute (at least one), each in the middle of its share of the run."""
    n = max(1, math.ceil(duration / 60 - 1e-9))
    period = duration / n
    return [(k + 0.5) * period for k in range(n)]


@dataclass
class OutputCounts:
    """Output status counters summed over the output processes (each starts from 0; a promoted standby
    too): the last values each PID reported, less those seen when the run started."""

    last: dict[int, dict[str, int]] = field(default_factory=dict)
    base: dict[int, dict[str, int]] = field(default_factory=dict)

    def see(self, out: dict[str, Any]) -> None:
        pid = out.get("pid")
        if pid is not None and "lost" in out:
            self.last[pid] = {k: int(out.get(k, 0)) for k in ("lost", "sent")}

    def start(self) -> None:
        self.base = {pid: dict(v) for pid, v in self.last.items()}

    def total(self, key: str) -> int:
        return sum(v[key] - self.base.get(pid, {}).get(key, 0) for pid, v in self.last.items())


Progress = Callable[[str, float, float, str], None]  # (phase, done, total, live line)


def run_soak(minutes: float = 0.4, engine: str = "flux2-tiny", viewers: int = 3, width: int = 256,
             height: int = 256, progress: Progress | None = None) -> dict[str, Any]:
    from vcam.daemon import Daemon
    from vcam.tools.bench.stream import cpu_label

    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
    say = progress or (lambda *a: None)
    duration = minutes * 60
    warmup = min(WARMUP_MAX_S, WARMUP_FRACTION * duration)
    cfg = soak_config(engine, width, height)
    fps = cfg.output.fps
    with tempfile.TemporaryDirectory(prefix="fluxrt-soak-") as tmp, _env(SEND_TIMES_ENV, str(Path(tmp) / "sends")):
        send_times = Path(tmp) / "sends"
        t_boot = time.monotonic()
        d = Daemon(cfg)
        d.start()
        looker: Viewers | None = None
        prompts: PromptChanger | None = None
        try:
            _wait(d, all_ready, START_TIMEOUT_S, lambda el: say("starting", el, 0, "engine and children starting"),
                  "the daemon was not ready")
            startup_s = time.monotonic() - t_boot
            looker = Viewers(d.api.port, viewers).start() if viewers else None
            prompts = PromptChanger(d.api.url).start()
            version0 = d.state.settings.prompt_version
            counts = OutputCounts()
            st = d.status()
            counts.see(st["output"])
            counts.start()
            stream0 = int(st["stream"].get("lost", 0))
            parts0 = looker.parts() if looker else []
            schedule = list(zip(kill_times(duration), _alternate()))
            kills: list[dict[str, Any]] = []
            timeline: list[list[float]] = []
            every = max(10.0, duration / 60)  # ~60 points in a long run
            warm: Snapshot | None = None
            t0 = time.monotonic()
            while (el := time.monotonic() - t0) < duration:
                st = d.status()
                counts.see(st["output"])
                # the warm-up figure is taken with every child up, so that it compares with the end's
                if warm is None and el >= warmup and all_ready(st):
                    warm = snapshot(el)
                if schedule and el >= schedule[0][0] and (warm is not None or schedule[0][0] < warmup):
                    role = schedule[0][1]
                    if child_ready(st, role):
                        pid = st[role]["pid"]
                        os.kill(pid, 9)
                        kills.append({"at_s": round(el, 1), "role": role, "pid": pid})
                        schedule.pop(0)
                if not timeline or el - timeline[-1][0] >= every:
                    s = snapshot(el)
                    timeline.append([s.at_s, s.supervisor.rss_mb, s.daemon.rss_mb])
                say("soak", el, duration, _live_line(st, timeline[-1][2], kills))
                time.sleep(TICK_S)
            t1 = time.monotonic()
            window = t1 - t0
            parts1 = looker.parts() if looker else []
            dropped = looker.dropped() if looker else 0
            # the end figure as the warm-up one: every child back (one may have been killed just before the
            # end), viewers and prompt client still connected (their sockets and threads are counted)
            _wait(d, all_ready, SETTLE_TIMEOUT_S, lambda el: say("settling", el, 0, "waiting for restarted children"),
                  "a child did not come back after its kill")
            st = d.status()
            counts.see(st["output"])
            end = snapshot(time.monotonic() - t0)
            if warm is None:  # a run too short for the warm-up to end with every child up
                warm = end
        finally:
            if prompts:
                prompts.stop()
            if looker:
                looker.stop()
            say("stopping", 0, 0, "stopping the daemon")
            d.stop()
        sends = read_send_times(send_times, t0, t1)
    last = st["output"].get("last_frame") or {}
    viewer_fps = np.array([(b - a) / window for a, b in zip(parts0, parts1)], float)
    return {
        "device": cpu_label(), "engine": st["inference"].get("engine") or engine, "resolution": f"{width}x{height}",
        "interpolation": st["inference"].get("interpolator"), "camera_fps": fps,
        "minutes": minutes, "startup_s": round(startup_s, 1), "warmup_s": round(warmup, 1),
        "window_s": round(window, 1),
        "resources": growth(warm, end),
        "daemon_rss_peaks_mb": rss_peaks(timeline, warmup),
        "output_interval_ms": interval_stats(sends, fps),
        "restarts": {role: st[role]["restarts"] for role in ("inference", "output")},
        "kills": kills,
        "frames_sent": int(sends.size),
        "frames_lost": {"output": counts.total("lost"), "stream": int(st["stream"].get("lost", 0)) - stream0},
        "prompt_changes": {"requested": prompts.sent, "failed": prompts.failed, "last_error": prompts.last_error,
                           "applied": (last.get("prompt_version") or version0) - version0,
                           "last_frame_prompt_version": last.get("prompt_version")},
        "viewers": {"count": viewers, "dropped": dropped,
                    "fps": _summary(viewer_fps) if viewer_fps.size else None},
        "engine_fps": round(float(st["inference"].get("engine_fps") or 0), 2),
        "timeline": timeline,
    }


def rss_peaks(timeline: list[list[float]], warmup_s: float, share: float = 0.2) -> dict[str, Any] | None:
    """The whole tree's RSS peak early (the `share` of the run after warm-up) and late (its last `share`).
    The tree's sum swings with every kill (a restarted inference process reloads its model), so two single
    readings compare a fresh process with a warm one; peaks compare the same state."""
    after = [row for row in timeline if row[0] >= warmup_s]
    if len(after) < 4:
        return None
    span = after[-1][0] - after[0][0]
    early = max(r[2] for r in after if r[0] <= after[0][0] + share * span)
    late = max(r[2] for r in after if r[0] >= after[-1][0] - share * span)
    return {"early": round(early, 1), "late": round(late, 1), "growth": round(late - early, 1)}


def _alternate() -> Iterator[str]:
    while True:
        yield "inference"
        yield "output"


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the children spawned meanwhile, then put the old value back."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _wait(d: Any, pred: Callable[[dict[str, Any]], bool], timeout: float, tick: Callable[[float], None],
          what: str) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = d.status()
        if pred(st):
            return
        tick(time.monotonic() - t0)
        time.sleep(TICK_S)
    inf, out = d.status()["inference"], d.status()["output"]
    raise RuntimeError(f"{what} within {timeout:.0f} s: inference {inf.get('heartbeat_phase')} "
                       f"({inf.get('last_error')}), output {out.get('heartbeat_phase')} ({out.get('last_error')})")


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"min": round(float(x.min()), 2), "median": round(float(np.median(x)), 2), "max": round(float(x.max()), 2)}


def _live_line(st: dict[str, Any], rss_mb: float, kills: list[dict[str, Any]]) -> str:
    inf, out = st["inference"], st["output"]
    return (f"{inf.get('engine_fps') or 0:.1f} fps  prompt v{st['settings']['prompt_version']}  kills {len(kills)}  "
            f"restarts {inf['restarts']}/{out['restarts']}  {rss_mb:.0f} MB")


# ---- display ------------------------------------------------------------------------------------------
@contextmanager
def live_progress(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar with a live line on stderr (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress as Bar, SpinnerColumn, TextColumn

    # narrow columns: the live line should fit an 80-column terminal
    bar = Bar(SpinnerColumn(), TextColumn("{task.description:<8}"), BarColumn(bar_width=10),
              TextColumn("{task.fields[count]:>9}"), TextColumn("{task.fields[line]}"),
              console=Console(stderr=True), transient=True)
    task = bar.add_task("starting", total=None, count="", line="")

    def update(phase: str, done: float, total: float, line: str) -> None:
        # total 0: a phase of unknown length (start-up, settling): a pulsing bar and the seconds so far
        count = f"{done:.0f}/{total:.0f} s" if total else f"{done:.0f} s"
        bar.update(task, description=phase, completed=done, total=total or None, count=count, line=line)

    with bar:
        yield update


def format_table(r: dict[str, Any]) -> str:
    res, iv, p, v = r["resources"], r["output_interval_ms"], r["prompt_changes"], r["viewers"]

    def row(name: str, x: dict[str, float], unit: str = "") -> str:
        return f"  {name:<22} {x['warm']:>9g}{unit} -> {x['end']:>9g}{unit}  ({x['growth']:+g}{unit})"

    fps = v["fps"] or {}
    kills = ", ".join(f"{k['role']} at {k['at_s']:.0f} s" for k in r["kills"]) or "none"
    return "\n".join([
        f"soak on {r['device']}: {r['engine']} {r['resolution']}, {r['interpolation']} interpolation, "
        f"{r['minutes']:g} min ({r['window_s']} s after {r['startup_s']} s start-up; warm-up {r['warmup_s']} s)",
        f"  warm-up end -> end     (at {res['warm_at_s']} s -> {res['end_at_s']} s)",
        row("supervisor RSS", res["supervisor"]["rss_mb"], " MB"),
        row("all processes RSS", res["daemon"]["rss_mb"], " MB"),
        row("supervisor open files", res["supervisor"]["open_files"]),
        row("all open files", res["daemon"]["open_files"]),
        row("supervisor threads", res["supervisor"]["threads"]),
        row("all threads", res["daemon"]["threads"]),
        row("processes", res["daemon"]["processes"]),
        row("semaphores", res["semaphores"]),
        f"  camera interval        p50 {iv['p50']} ms, p99 {iv['p99']} ms, max {iv['max']} ms "
        f"(nominal {iv['nominal']} ms; {iv['over_2x_nominal']} over 2x)",
        f"  kills / restarts       {kills}; restarts inference {r['restarts']['inference']}, "
        f"output {r['restarts']['output']}",
        f"  frames                 {r['frames_sent']} sent, lost: output {r['frames_lost']['output']}, "
        f"stream {r['frames_lost']['stream']}",
        f"  prompt changes         {p['requested']} sent ({p['failed']} failed), {p['applied']} applied by the "
        f"last frame",
        f"  viewers                {v['count']}: fps min {fps.get('min')} median {fps.get('median')} max "
        f"{fps.get('max')}, {v['dropped']} dropped",
    ])


def show_progress(as_json: bool) -> bool:
    """The live line is on stderr; with --json into a file or a pipe nobody watches it."""
    return not as_json or sys.stdout.isatty()
