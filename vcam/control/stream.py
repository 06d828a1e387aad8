"""The camera's picture over HTTP: the source behind /stream.mjpg and /frame.jpg on the control server.

It reads the OUTPUT channel with a cursor of its own. The supervisor owns that channel and the inference
process writes it whether or not the output process lives, so a restarting output process does not
interrupt the stream. Groups play at their pace through the output process's `PresentationScheduler`
(the stream shows what the camera shows); after `stall_timeout_s` without a new frame a status card
takes over, as on the camera. Each new picture is encoded to JPEG once, on demand, and the bytes are
shared by every viewer. The channel is read only while someone watches (or just asked for /frame.jpg).

It never waits on the OUTPUT doorbell: the output process is that bell's only waiter, a second one
would steal its rings. It polls at the output fps instead.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import cv2
import numpy as np
from fastapi.concurrency import run_in_threadpool

from vcam.output.cards import card_lines, status_card
from vcam.output.scheduler import PresentationScheduler
from vcam.shm import ChannelSpec, FrameChannel

BOUNDARY = "fluxrtframe"
TINT = np.array([255, 40, 40], np.float32)  # recomputed cells, blended at 40%
RESEND_S = 1.0  # a viewer gets the current picture again this often when nothing changes (keeps it alive)
SNAPSHOT_KEEPS_READING_S = 2.0  # after a /frame.jpg the reader stays on, so a poller sees fresh frames
SNAPSHOT_WAIT_S = 2.0


def overlay_cells(frame: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`frame` with the recomputed token cells (16x16 pixels each) tinted red."""
    if mask is None or not mask.any():
        return frame
    h, w = frame.shape[:2]
    cells = np.kron(mask, np.ones((16, 16), bool))[:h, :w]
    out = frame.copy()
    out[cells] = (0.6 * out[cells] + 0.4 * TINT).astype(np.uint8)
    return out


def multipart_part(jpeg: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
            + jpeg + b"\r\n")


class StreamSource:
    def __init__(self, spec: ChannelSpec, fps: float, stall_timeout_s: float, quality: int = 80,
                 notice: Callable[[], str | None] = lambda: None):
        self.spec, self.fps, self.stall_timeout_s, self.quality = spec, fps, stall_timeout_s, quality
        self.notice = notice  # the supervisor's current notice (e.g. "engine restarting"), shown on the card
        self.mode = "live"
        self.watchers = 0
        self.showing = "nothing"
        self.counts = {"pictures": 0, "encodes": 0, "cards": 0, "lost": 0}
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._version = 0
        self._live = False  # the current picture belongs to the running read session (not a stale one)
        self._jpeg: dict[bool, tuple[int, bytes]] = {}  # overlay on/off -> (version, JPEG)
        self._encode_lock = threading.Lock()
        self._wanted_until = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self) -> "StreamSource":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=3)

    def set_mode(self, mode: str) -> None:  # a ControlState listener passes Settings.mode
        self.mode = mode

    @property
    def status(self) -> dict[str, Any]:
        return {"watchers": self.watchers, "reading": self._live, "showing": self.showing, **self.counts}

    # ---- reading the OUTPUT channel (the "stream" thread) ----------------------------------------
    def _wanted(self) -> bool:
        return self.watchers > 0 or time.monotonic() < self._wanted_until

    def _run(self) -> None:
        channel = FrameChannel.attach(self.spec)
        try:
            while not self._stop.is_set():
                if self._wanted():
                    self._play(channel)
                    with self._cond:
                        self._live = False
                else:
                    self._wake.wait(1.0)
                    self._wake.clear()
        finally:
            channel.close()

    def _play(self, channel: FrameChannel) -> None:
        """One read session: from the newest frame on, until nobody watches."""
        scheduler = PresentationScheduler(self.fps)
        latest = channel.read_latest()  # a new viewer wants the present, not the backlog
        last_new = -math.inf
        # (write_ts is CLOCK_MONOTONIC in the writer: comparable across processes)
        if latest is not None and time.monotonic() - latest[1].write_ts <= self.stall_timeout_s:
            last_new = latest[1].write_ts
            self.publish(latest[0], latest[1].mask)
        while not self._stop.is_set() and self._wanted():
            now = time.monotonic()
            frames, lost = channel.read_new()
            self.counts["lost"] += lost
            scheduler.push_frames(frames, now)
            due = scheduler.pop_due(now)
            if due is not None:
                last_new = now
                self.publish(due.frame, due.meta.mask)
            elif now - last_new > self.stall_timeout_s:
                self._show_card()
            nxt = scheduler.next_due()
            self._stop.wait(min(1.0 / self.fps, max(0.0, (nxt or math.inf) - time.monotonic())))

    def _show_card(self) -> None:
        lines = card_lines(self.mode, self.notice())
        text = " / ".join(lines[1:])
        if self.showing != f"card: {text}":  # drawn and published once per text, not at every poll
            self.publish(status_card(self.spec.width, self.spec.height, lines), None, f"card: {text}")
            self.counts["cards"] += 1

    def publish(self, frame: np.ndarray, mask: np.ndarray | None, showing: str = "frames") -> None:
        """Make `frame` the current picture (viewers pick it up at their next poll)."""
        with self._cond:
            self._frame, self._mask, self._version, self._live = frame, mask, self._version + 1, True
            self.showing = showing
            self.counts["pictures"] += 1
            self._cond.notify_all()

    # ---- serving ---------------------------------------------------------------------------------
    def jpeg(self, overlay: bool) -> tuple[int, bytes]:
        """(version, JPEG) of the current picture; encoded once per picture and overlay, for all viewers."""
        with self._encode_lock:
            with self._cond:
                frame, mask, version = self._frame, self._mask, self._version
            cached = self._jpeg.get(overlay)
            if cached is not None and cached[0] == version:
                return cached
            if frame is None:
                raise RuntimeError("no picture yet")  # callers wait for one first
            img = overlay_cells(frame, mask) if overlay else frame
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            self.counts["encodes"] += 1
            self._jpeg[overlay] = (version, buf.tobytes())
            return self._jpeg[overlay]

    def snapshot(self, overlay: bool) -> bytes | None:
        """The current picture as JPEG (reading starts if nobody watches); None when none comes in time."""
        self._wanted_until = time.monotonic() + SNAPSHOT_KEEPS_READING_S
        self._wake.set()
        with self._cond:
            if not self._cond.wait_for(lambda: self._live, timeout=SNAPSHOT_WAIT_S):
                return None
        return self.jpeg(overlay)[1]

    async def multipart(self, overlay: bool) -> AsyncIterator[bytes]:
        """multipart/x-mixed-replace parts for one viewer: each new picture, never faster than the camera."""
        self.watchers += 1
        self._wake.set()
        seen, sent_at = -1, 0.0
        try:
            while True:
                now = time.monotonic()
                if self._live and (self._version != seen or now - sent_at >= RESEND_S):
                    seen, jpeg = await run_in_threadpool(self.jpeg, overlay)
                    sent_at = now
                    yield multipart_part(jpeg)
                await asyncio.sleep(1.0 / self.fps)
        finally:
            self.watchers -= 1
