"""Capture thread (supervisor process): source -> crop+resize -> INPUT channel, latest frame wins."""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from engine.image import Fit, fit_frame
from vcam.shm import Doorbell, FrameChannel, FrameMeta
from vcam.sources import FrameSource

log = logging.getLogger(__name__)

STALL_AFTER_S = 1.0  # no frame for this long, with the source claiming nothing is wrong, is an error too
LOG_REPEAT_S = 30.0  # a lasting source error is logged again this often (a change of it at once)
_EXPECTED = "expected uint8 RGB (H, W, 3)"


def frame_problem(raw: Any) -> str | None:
    """None for a frame the pipeline can use (uint8, H x W x 3, not empty); else what the source gave instead."""
    if not isinstance(raw, np.ndarray):
        return f"source gave a {type(raw).__name__}, not an image array; {_EXPECTED}"
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[2] != 3 or 0 in raw.shape:
        return f"source gave a {raw.dtype} frame of shape {raw.shape}; {_EXPECTED}"
    return None


class CaptureThread(threading.Thread):
    """Reads the source at its fps and publishes each frame with a frame_id and capture time.

    Webcams pace themselves (read blocks until a frame); synthetic and file sources are paced here
    against absolute deadlines so the rate does not drift.

    Nothing a source does stops capture: an exception, a frame that is not uint8 RGB (refused and counted
    in `refused`) or no frames at all become the source error, `status["error"]`. `on_error` is called (from
    this thread: keep it quick) with each new error text, and with None once good frames arrive again.
    """

    def __init__(self, source: FrameSource, channel: FrameChannel, doorbell: Doorbell, fps: float, paced: bool,
                 on_error: Callable[[str | None], None] = lambda e: None, stall_after_s: float = STALL_AFTER_S,
                 fit: Fit = "crop"):
        super().__init__(name="capture", daemon=True)
        self.source, self.channel, self.doorbell = source, channel, doorbell
        self.fit = fit  # output.fit: a portrait webcam is cropped or padded into the engine's frame as on the camera
        self.period = 1.0 / fps
        self.paced = paced
        self.on_error = on_error
        self.stall_after_s = stall_after_s
        self.frames = 0
        self.refused = 0  # frames the source gave that were not uint8 RGB
        self.error: str | None = None
        self._last_frame = time.monotonic()  # the last good frame (or start / resume): for the stall error
        self._logged_at = 0.0
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
        return {**self.source.status, "frames": self.frames, "refused": self.refused, "error": self.error,
                "paused": not self._running.is_set()}

    def _stall(self, now: float) -> str | None:
        # the time given grows in doublings (1, 2, 4, 8 ... s): each is a new text, so one log line and one
        # on_error call per doubling rather than one a second
        waited = now - self._last_frame
        if waited < self.stall_after_s:
            return None
        shown = self.stall_after_s * 2 ** math.floor(math.log2(waited / self.stall_after_s))
        return f"no frames from the source for {shown:g} s"

    def _report(self, error: str | None, now: float, exc: BaseException | None = None) -> None:
        """Log and announce a change of the source error; repeat a lasting one in the log every LOG_REPEAT_S."""
        if error == self.error:
            if error is not None and now - self._logged_at >= LOG_REPEAT_S:
                log.warning("source error (still): %s", error)
                self._logged_at = now
            return
        self.error = error
        if error is None:
            log.info("the source delivers frames again")
        else:
            log.warning("source error: %s", error, exc_info=exc)
            self._logged_at = now
        try:
            self.on_error(error)
        except Exception:  # a listener's bug must not stop capture
            log.exception("source error listener failed")

    def run(self) -> None:
        deadline = self._last_frame = time.monotonic()
        while not self._stop_event.is_set():
            if not self._running.is_set():
                self._running.wait()
                deadline = self._last_frame = time.monotonic()  # a pause is not a stall
                continue
            if self.paced:
                deadline += self.period
                delay = deadline - time.monotonic()
                if delay < -self.period:  # fell far behind (machine was busy): re-anchor, don't burst
                    deadline = time.monotonic()
                elif delay > 0 and self._stop_event.wait(delay):
                    break
            if not self.step():
                self._stop_event.wait(0.05 if self.paced else 0.1)
        self.source.close()

    def step(self) -> bool:
        """Read the source once: publish a good frame (True), or record why there is none (False)."""
        exc: Exception | None = None
        try:
            raw = self.source.read()
        except Exception as e:  # a misbehaving driver must not kill capture; the source retries
            raw, exc = None, e
        now = time.monotonic()
        problem = frame_problem(raw) if raw is not None else None
        if raw is not None and problem is None:
            self._last_frame = now
            self._report(None, now)
            w, h = self.channel.spec.width, self.channel.spec.height
            self.channel.write(fit_frame(raw, w, h, self.fit), FrameMeta(frame_id=self.frames, capture_ts=now))
            self.doorbell.ring()
            self.frames += 1
            return True
        if problem is not None:
            self.refused += 1
        # the most specific reason first; no frame yet but no reason either keeps the current error
        error = ((f"source read failed: {type(exc).__name__}: {exc}" if exc else None)
                 or self.source.status.get("error") or problem or self._stall(now))
        if error is not None:
            self._report(error, now, exc)
        return False
