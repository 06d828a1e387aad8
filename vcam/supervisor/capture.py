"""Capture thread (supervisor process): source -> crop+resize -> INPUT channel, latest frame wins."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from engine.image import cover_resize
from vcam.shm import Doorbell, FrameChannel, FrameMeta
from vcam.sources import FrameSource

log = logging.getLogger(__name__)


class CaptureThread(threading.Thread):
    """Reads the source at its fps and publishes each frame with a frame_id and capture time.

    Webcams pace themselves (read blocks until a frame); synthetic and file sources are paced here
    against absolute deadlines so the rate does not drift.
    """

    def __init__(self, source: FrameSource, channel: FrameChannel, doorbell: Doorbell, fps: float, paced: bool):
        super().__init__(name="capture", daemon=True)
        self.source, self.channel, self.doorbell = source, channel, doorbell
        self.period = 1.0 / fps
        self.paced = paced
        self.frames = 0
        self._stop_event = threading.Event()
        self._running = threading.Event()  # cleared while the daemon is paused: nothing to capture for
        self._running.set()

    def stop(self) -> None:
        self._stop_event.set()
        self._running.set()

    def pause(self, paused: bool) -> None:
        if paused:
            self._running.clear()
        else:
            self._running.set()

    @property
    def status(self) -> dict[str, Any]:
        return {**self.source.status, "frames": self.frames, "paused": not self._running.is_set()}

    def run(self) -> None:
        w, h = self.channel.spec.width, self.channel.spec.height
        deadline = time.monotonic()
        while not self._stop_event.is_set():
            if not self._running.is_set():
                self._running.wait()
                deadline = time.monotonic()
                continue
            if self.paced:
                deadline += self.period
                delay = deadline - time.monotonic()
                if delay < -self.period:  # fell far behind (machine was busy): re-anchor, don't burst
                    deadline = time.monotonic()
                elif delay > 0 and self._stop_event.wait(delay):
                    break
            try:
                raw = self.source.read()
            except Exception:  # a misbehaving driver must not kill capture; the source retries
                log.exception("source read failed")
                raw = None
            if raw is None:
                self._stop_event.wait(0.05 if self.paced else 0.1)
                continue
            captured = time.monotonic()
            frame = cover_resize(raw, w, h)
            self.channel.write(frame, FrameMeta(frame_id=self.frames, capture_ts=captured))
            self.doorbell.ring()
            self.frames += 1
        self.source.close()
