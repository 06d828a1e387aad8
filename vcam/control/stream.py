"""The camera's picture over HTTP: the source behind /stream.mjpg and /frame.jpg on the control server.

It reads the OUTPUT channel with a cursor of its own. The supervisor owns that channel and the inference
process writes it whether or not the output process lives, so a restarting output process does not
interrupt the stream. Groups play at their pace through the output process's `PresentationScheduler`
(the stream shows what the camera shows); after `stall_timeout_s` without a new frame a status card
takes over, as on the camera. The channel is read only while someone watches (or just asked for
/frame.jpg).

Fan-out: the stream thread encodes each new picture once per overlay variant that somebody watches
(off the event loop, without a threadpool hop per viewer) and wakes the viewers through one asyncio
event per event loop. Each viewer then sends the newest multipart part, the same bytes object for
all; a viewer whose socket is full is parked in its own send and, once it drains, skips to the newest
picture. Nobody waits for anybody else.

It never waits on the OUTPUT doorbell: the output process is that bell's only waiter, a second one
would steal its rings. It polls at the output fps instead.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio
import cv2
import numpy as np
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

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


class _LoopViewers:
    """The viewers on one event loop: they all wait on `event`, which is set and replaced (on that loop)
    whenever a new part is ready. One call_soon_threadsafe per loop and picture, not one per viewer."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.count = 0
        self.event = asyncio.Event()  # (binds to the loop at its first wait)

    def wake_soon(self) -> bool:
        """From any thread; False when the loop has closed (its viewers are gone with it)."""
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            return False
        return True

    def _wake(self) -> None:
        # replaced before it is set: a viewer that looks after this wake waits for the next one
        event, self.event = self.event, asyncio.Event()
        event.set()


class StreamSource:
    def __init__(self, spec: ChannelSpec, fps: float, stall_timeout_s: float, quality: int = 80,
                 notice: Callable[[], str | None] = lambda: None):
        self.spec, self.fps, self.stall_timeout_s, self.quality = spec, fps, stall_timeout_s, quality
        self.notice = notice  # the supervisor's current notice (e.g. "engine restarting"), shown on the card
        # the source's picture (a StreamSource over INPUT), served beside this one at /input.jpg; set by the daemon
        self.input: StreamSource | None = None
        self.mode = "live"
        self.showing = "nothing"
        self.counts = {"pictures": 0, "encodes": 0, "cards": 0, "lost": 0, "sent": 0}
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._version = 0
        self._live = False  # the current picture belongs to the running read session (not a stale one)
        self._jpeg: dict[bool, tuple[int, bytes]] = {}  # overlay on/off -> (version, JPEG)
        self._parts: dict[bool, tuple[int, bytes]] = {}  # overlay on/off -> (version, multipart part)
        self._encode_lock = threading.Lock()
        # viewers by overlay variant and by event loop; changed on the loops, read by the stream thread
        self._viewers_lock = threading.Lock()
        self._viewers = {False: 0, True: 0}
        self._loops: dict[asyncio.AbstractEventLoop, _LoopViewers] = {}
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
    def watchers(self) -> int:
        """Viewers whose stream is running now (counted from its start until its client went away)."""
        with self._viewers_lock:
            return self._viewers[False] + self._viewers[True]

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
                    with self._cond:  # the picture belonged to that session: the next one starts afresh
                        self._live, self.showing = False, "nothing"
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
            self.fan_out()  # a viewer who just came gets the picture now, even while a card stands still
            nxt = scheduler.next_due()
            self._stop.wait(min(1.0 / self.fps, max(0.0, (nxt or math.inf) - time.monotonic())))

    def _show_card(self) -> None:
        lines = card_lines(self.mode, self.notice())
        text = " / ".join(lines[1:])
        if self.showing != f"card: {text}":  # drawn and published once per text, not at every poll
            self.publish(status_card(self.spec.width, self.spec.height, lines), None, f"card: {text}")
            self.counts["cards"] += 1

    def publish(self, frame: np.ndarray, mask: np.ndarray | None, showing: str = "frames") -> None:
        """Make `frame` the current picture, encoded for and sent to whoever watches."""
        with self._cond:
            self._frame, self._mask, self._version, self._live = frame, mask, self._version + 1, True
            self.showing = showing
            self.counts["pictures"] += 1
            self._cond.notify_all()
        self.fan_out()

    def fan_out(self) -> None:
        """Encode the current picture once for each overlay variant somebody watches, then wake the viewers.
        Called by the stream thread (after each publish and poll): the encoding stays off the event loops."""
        with self._viewers_lock:
            wanted = [overlay for overlay, n in self._viewers.items() if n > 0]
            loops = list(self._loops.values())
        if not wanted or not self._live:
            return
        fresh = False
        for overlay in wanted:
            part = self._parts.get(overlay)
            if part is None or part[0] != self._version:
                version, jpeg = self.jpeg(overlay)
                self._parts[overlay] = (version, multipart_part(jpeg))  # built once: every viewer sends these bytes
                fresh = True
        if fresh:
            closed = [viewers for viewers in loops if not viewers.wake_soon()]
            if closed:
                with self._viewers_lock:
                    for viewers in closed:
                        self._loops.pop(viewers.loop, None)

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

    def _join(self, loop: asyncio.AbstractEventLoop, overlay: bool) -> _LoopViewers:
        with self._viewers_lock:
            viewers = self._loops.get(loop)
            if viewers is None:
                viewers = self._loops[loop] = _LoopViewers(loop)
            viewers.count += 1
            self._viewers[overlay] += 1
        self._wake.set()  # the stream thread starts reading (or encodes this variant at its next poll)
        return viewers

    def _leave(self, viewers: _LoopViewers, overlay: bool) -> None:
        with self._viewers_lock:
            self._viewers[overlay] -= 1
            viewers.count -= 1
            if viewers.count == 0 and self._loops.get(viewers.loop) is viewers:
                del self._loops[viewers.loop]

    async def multipart(self, overlay: bool) -> AsyncGenerator[bytes, None]:
        """multipart/x-mixed-replace parts for one viewer: the newest picture whenever there is a new one
        (never faster than the camera), the same one again after RESEND_S without news. Serve it with
        `MultipartResponse`, which closes it when the client leaves."""
        loop = asyncio.get_running_loop()
        viewers = self._join(loop, overlay)
        seen, sent_at = -1, -math.inf
        try:
            while True:
                wake = viewers.event  # taken before looking: a part made after this look sets it
                part = self._parts.get(overlay)
                ready = part is not None and self._live
                now = loop.time()
                if ready and (part[0] != seen or now - sent_at >= RESEND_S):
                    seen, sent_at = part[0], now
                    self.counts["sent"] += 1
                    yield part[1]
                    continue  # the send may have taken long (a full socket): look again for the newest
                try:
                    async with asyncio.timeout_at(sent_at + RESEND_S if ready else None):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            self._leave(viewers, overlay)


class MultipartResponse(StreamingResponse):
    """The MJPEG response for `StreamSource.multipart`: ends the viewer (and its `watchers` count) when
    the client goes away, whether its task was waiting for a picture or parked in a send at that moment.
    (Starlette stops a stream by cancelling it; a generator parked at its `yield` would only be closed
    by the garbage collector, and ASGI 2.4 servers would not even be listened to for the disconnect.)"""

    def __init__(self, parts: AsyncGenerator[bytes, None]):
        super().__init__(parts, media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                         headers={"Cache-Control": "no-store"})
        self._parts = parts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tasks:
                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # a server on ASGI 2.4 says "the client left" this way
                        pass
                    tasks.cancel_scope.cancel()

                tasks.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tasks.cancel_scope.cancel()
        finally:
            await self._parts.aclose()
