"""Output process: OUTPUT channel -> presentation scheduling -> sinks (virtual camera, file).

No HTTP here: the control server in the supervisor process reads OUTPUT itself for /stream.mjpg, so a
restarting output process does not take the stream down.

It never waits on the engine: when no new frame is due, it repeats the last one at the sinks' fps,
and after `stall_timeout_s` without a new frame it shows a status card instead.

Engine frames come at the engine's size; the sinks get `output.width` x `output.height` (16:9 for calls), each
new frame fitted once (`output.fit`) and that fitted frame kept for the repeats.

Warm standby: the supervisor keeps a second output process started, attached and with its sinks built
(the imports and set-up take seconds on a busy machine), waiting on `links.activate`. When the serving
one dies or hangs, the standby takes over at once: the camera is back within a fraction of a second.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import numpy as np

from engine.image import fit_frame
from vcam.output.cards import card_lines, status_card
from vcam.supervisor.child import RESET_STATS, STOP, Links, drain, parent_alive, report, run_child
from vcam.supervisor.heartbeat import STANDBY, Pulse
from vcam.config import Config
from vcam.messages import Settings
from vcam.output.scheduler import PresentationScheduler
from vcam.shm import FrameChannel, FrameMeta

log = logging.getLogger(__name__)
STATUS_EVERY_S = 0.5
WINDOW_S = 10.0  # latency / interval statistics cover the last few seconds


def _pct(values: deque[float], q: float) -> float | None:
    return float(np.percentile(np.fromiter(values, float), q)) if values else None


class OutputWorker:
    def __init__(self, cfg: Config, links: Links, pulse: Pulse | None = None):
        self.cfg, self.links = cfg, links
        self.pulse = pulse or Pulse()
        o = cfg.output
        self.width, self.height = o.width, o.height  # the camera's size, not the engine's
        self.channel = FrameChannel.attach(links.output)
        self.scheduler = PresentationScheduler(o.fps)
        self.sinks: dict[str, Any] = {}
        if o.virtual_camera != "off":
            from vcam.output.sinks.virtualcam import VirtualCameraSink

            self.sinks["virtual_camera"] = VirtualCameraSink(o.camera_label, self.width, self.height, o.fps,
                                                             backend=o.camera_backend,
                                                             required=o.virtual_camera == "on")
        if o.record_path is not None:
            from vcam.output.sinks.recorder import RecorderSink

            self.sinks["recorder"] = RecorderSink(o.record_path, self.width, self.height, o.fps)
        self.mode = "live"
        self.notice: str | None = None
        self._card: tuple[list[str], np.ndarray] | None = None
        self.last_frame: np.ndarray | None = None  # at the output size, ready to repeat
        self.last_meta: FrameMeta | None = None
        self.last_new_ts = time.monotonic()
        self.last_send = 0.0
        self.last_was_new = False
        self.latency_ms: deque[float] = deque(maxlen=int(WINDOW_S * o.fps))
        self.intervals_ms: deque[float] = deque(maxlen=int(WINDOW_S * o.fps))
        self.counts = {"sent": 0, "new": 0, "repeats": 0, "cards": 0, "groups": 0, "engine_frames_shown": 0,
                       "lost": 0, "send_errors": 0}
        self.showing = "nothing"

    # ---- inputs ----------------------------------------------------------------------------------
    def take_frames(self, now: float) -> None:
        frames, lost = self.channel.read_new()
        self.counts["lost"] += lost
        self.counts["groups"] += self.scheduler.push_frames(frames, now)

    def handle_control(self) -> bool:
        for msg in drain(self.links.control):
            if msg == STOP:
                return False
            if isinstance(msg, Settings):
                self.mode = msg.mode
            elif isinstance(msg, dict) and "notice" in msg:
                self.notice = msg["notice"]
                self._card = None
            elif msg == RESET_STATS:  # a benchmark starts its measurement window
                self.latency_ms.clear()
                self.intervals_ms.clear()
        return True

    # ---- output ----------------------------------------------------------------------------------
    def fitted(self, frame: np.ndarray) -> np.ndarray:
        """An engine frame at the camera's size (the same array when the sizes already match)."""
        return fit_frame(frame, self.width, self.height, self.cfg.output.fit)

    def card(self) -> np.ndarray:
        lines = card_lines(self.mode, self.notice)
        if self._card is None or self._card[0] != lines:  # drawn once per text, not 30 times a second
            self._card = (lines, status_card(self.width, self.height, lines))
        return self._card[1]

    def send(self, frame: np.ndarray, now: float) -> None:
        for name, sink in self.sinks.items():
            try:
                sink.send(frame)
            except Exception:  # noqa: BLE001 - one sink failing must not starve the others
                self.counts["send_errors"] += 1
                log.exception("sink %s failed", name)
        if self.last_send:
            self.intervals_ms.append((now - self.last_send) * 1000)
        self.last_send = now
        self.counts["sent"] += 1

    def tick(self, now: float) -> None:
        due = self.scheduler.pop_due(now)
        if due is not None:
            # fitted once, here: a repeat sends this same array again and costs no scaling
            self.last_frame, self.last_meta, self.last_new_ts = self.fitted(due.frame), due.meta, now
            self.latency_ms.append((now - due.meta.capture_ts) * 1000)
            self.counts["new"] += 1
            self.counts["engine_frames_shown"] += due.meta.is_engine_frame
            self.showing = "frames"
            self.send(self.last_frame, now)
            self.last_was_new = True
        elif now - self.last_send >= self.scheduler.keepalive_after(self.last_was_new) * 0.999:
            if self.last_frame is None or now - self.last_new_ts > self.cfg.output.stall_timeout_s:
                self.showing = "card"
                self.counts["cards"] += 1
                self.send(self.card(), now)
            else:
                self.counts["repeats"] += 1
                self.send(self.last_frame, now)
            self.last_was_new = False

    def status(self) -> dict[str, Any]:
        iv = np.fromiter(self.intervals_ms, float)
        m = self.last_meta
        return {
            "fps_target": self.cfg.output.fps,
            "showing": self.showing,
            "card": " / ".join(self._card[0][1:]) if self.showing == "card" and self._card else None,
            "last_frame": None if m is None else {"frame_id": m.frame_id, "prompt_version": m.prompt_version,
                                                   "group": m.group, "capture_ts": m.capture_ts},
            "latency_p50_ms": _pct(self.latency_ms, 50),
            "latency_p95_ms": _pct(self.latency_ms, 95),
            "interval_mean_ms": float(iv.mean()) if iv.size else None,
            "interval_std_ms": float(iv.std()) if iv.size > 1 else None,
            "engine_interval_ms": (self.scheduler.interval or 0) * 1000,
            "dropped_interpolated": self.scheduler.dropped_interpolated,
            **self.counts,
            "sinks": {name: dict(sink.status) for name, sink in self.sinks.items()},
        }

    def stand_by(self) -> bool:
        """Wait, beating, until activated (True) or told to stop (False). Settings and notices are kept
        meanwhile, so the first frame sent after taking over already shows the right mode and card."""
        report(self.links, "output", {"standby": True})
        while not self.links.activate.wait(0.2):
            self.pulse.beat(STANDBY)
            if not parent_alive() or not self.handle_control():
                return False
        # the present, not the backlog: the newest frame becomes the one to repeat (or a card, when stale)
        latest = self.channel.read_latest()
        if latest is not None:
            self.last_frame, self.last_meta = self.fitted(latest[0]), latest[1]
            self.last_new_ts = latest[1].write_ts
        return True

    def run(self) -> None:
        next_report = 0.0
        try:
            if self.links.activate is not None and not self.stand_by():
                return
            while parent_alive() and self.handle_control():
                self.pulse.beat()
                now = time.monotonic()
                self.take_frames(now)
                self.tick(now)
                if now >= next_report:
                    report(self.links, "output", self.status())
                    next_report = now + STATUS_EVERY_S
                wake = min(self.scheduler.wake_time(self.last_send, self.last_was_new), next_report)
                self.links.output_bell.wait(wake - time.monotonic())
        finally:
            for sink in self.sinks.values():
                sink.close()


def output_main(cfg: Config, links: Links, pulse: Pulse) -> None:
    run_child("output", links, cfg.log_level, lambda: OutputWorker(cfg, links, pulse).run())
