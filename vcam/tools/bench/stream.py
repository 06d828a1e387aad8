"""`fluxrt-cam bench stream`: the preview fan-out (/stream.mjpg) under many viewers.

A server process plays the daemon's part: a synthetic OUTPUT channel fed at the camera's fps (the
inference process's stand-in), the `StreamSource` reading it with its own cursor, and the control server
on a free loopback port. This process plays the viewers: N lightweight asyncio raw-socket clients that
count multipart boundaries (no JPEG decoding), plus one deliberately slow viewer that reads a little at
a time. Two processes, as in real use (the browsers are not the daemon), so both cores are used.

Reported: per-viewer fps (min / p5 / median / max), parts sent and received, JPEG encodes against
pictures, `watchers` during the run and after every client left, the slow viewer's fps, and CPU use.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import psutil

from vcam.control.stream import BOUNDARY

MARK = f"--{BOUNDARY}\r\n".encode()  # starts every part
SLOW_READ_BYTES_PER_S = 48 * 1024  # the slow viewer: a few pictures a second at most
SLOW_RCVBUF = 16 * 1024  # ... and a small socket buffer, so the server sees it full soon
CONNECTS_AT_ONCE = 64  # under the server's listen backlog (128): no SYN retries in the connect phase
FIRST_PART_TIMEOUT_S = 30.0
WATCHERS_ZERO_TIMEOUT_S = 10.0
SETTLE_S = 1.0  # after every viewer has its first part, before the window (connect bursts are over)


# ---- the server process ------------------------------------------------------------------------------
def synthetic_frames(width: int, height: int, count: int) -> list[np.ndarray]:
    """`count` frames of a smooth scene with a moving block: JPEG sizes like a camera picture's, not like
    noise (which would make every part several times larger than a real one)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 150 + 50], -1)
    frames = []
    for i in range(count):
        f = base.copy()
        cx = int((i / count) * (width - width // 4))
        f[height // 3: height // 3 + height // 4, cx: cx + width // 4] = (230, 60 + 5 * i % 120, 40)
        f += 12 * np.sin((x + 8 * i) / 23.0)[..., None]  # texture that moves: every picture differs
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


def _feed(channel: Any, fps: float, frames: list[np.ndarray], stop: threading.Event, written: list[int]) -> None:
    from vcam.shm import FrameMeta

    t0 = time.monotonic()
    i = 0
    while not stop.is_set():
        channel.write(frames[i % len(frames)], FrameMeta(i, time.monotonic(), group=i))
        i += 1
        written[0] = i
        stop.wait(max(0.0, t0 + i / fps - time.monotonic()))  # on a fixed grid: no drift


def serve(width: int, height: int, fps: float, quality: int, conn: Connection) -> None:
    """The server process: channel + feeder + StreamSource + control server; says its port on `conn`,
    runs until told to stop, then answers with the stream's final status."""
    from vcam.config import ControlConfig, load_config
    from vcam.control.server import start_api_server
    from vcam.control.state import ControlState
    from vcam.control.stream import StreamSource
    from vcam.shm import FrameChannel

    channel = FrameChannel.create("bench", width, height, slots=4)
    stop = threading.Event()
    written = [0]
    source = StreamSource(channel.spec, fps, stall_timeout_s=2.0, quality=quality).start()
    server = start_api_server(ControlConfig(port=0), ControlState(load_config()),
                              lambda: {"stream": source.status, "written": written[0]}, source)
    feeder = threading.Thread(target=_feed, args=(channel, fps, synthetic_frames(width, height, 30), stop, written),
                              name="feeder", daemon=True)
    feeder.start()
    try:
        conn.send(server.port)
        conn.recv()  # "stop"
        conn.send(dict(source.status))
    finally:
        stop.set()
        server.stop(timeout=2)
        source.stop()
        feeder.join(2)
        channel.close()


# ---- the viewers (this process) ----------------------------------------------------------------------
class PartCounter(asyncio.Protocol):
    """One viewer on a raw socket: counts the parts of /stream.mjpg as bytes arrive. With
    `read_bytes_per_s` it reads slowly: it stops reading after each chunk for as long as the rate says."""

    def __init__(self, read_bytes_per_s: float | None = None):
        self.read_bytes_per_s = read_bytes_per_s
        self.parts = 0
        self.bytes = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._tail = b""
        self.first_part = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        # a mark split across two reads lies in tail + head (each shorter than the mark: no double count)
        found = data.count(MARK) + ((self._tail + data[:len(MARK) - 1]).count(MARK) if self._tail else 0)
        self._tail = data[-(len(MARK) - 1):]
        if found:
            self.parts += found
            if not self.first_part.done():
                self.first_part.set_result(None)
        if self.read_bytes_per_s and self.transport is not None:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(len(data) / self.read_bytes_per_s, self._resume)

    def _resume(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.first_part.done():
            self.first_part.set_exception(ConnectionError(f"the server closed the stream ({exc})"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def open_viewer(port: int, path: str = "/stream.mjpg", read_bytes_per_s: float | None = None,
                      rcvbuf: int | None = None) -> PartCounter:
    """Connect a `PartCounter` to 127.0.0.1:`port` and ask for `path`."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # before connecting: the window is agreed on at the handshake
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        _, viewer = await loop.create_connection(lambda: PartCounter(read_bytes_per_s), sock=sock)
    except BaseException:
        sock.close()
        raise
    assert viewer.transport is not None
    viewer.transport.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return viewer


async def get_json(port: int, path: str) -> Any:
    """A plain HTTP/1.1 GET on a fresh connection (no client library: the same path as the viewers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET {path}: {head[:80]!r}")
    return json.loads(body)


async def stream_status(port: int) -> dict[str, Any]:
    return (await get_json(port, "/api/status"))["daemon"]["stream"]


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _fps_summary(fps: np.ndarray) -> dict[str, float]:
    return {"min": round(float(fps.min()), 1), "p5": round(float(np.percentile(fps, 5)), 1),
            "median": round(float(np.median(fps)), 1), "max": round(float(fps.max()), 1)}


async def _measure(port: int, viewers_n: int, seconds: float, server: psutil.Process) -> dict[str, Any]:
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def connect(**kw: Any) -> PartCounter:
        async with gate:
            return await open_viewer(port, **kw)

    viewers = list(await asyncio.gather(*(connect() for _ in range(viewers_n))))
    slow = await open_viewer(port, read_bytes_per_s=SLOW_READ_BYTES_PER_S, rcvbuf=SLOW_RCVBUF)
    everyone = viewers + [slow]
    try:
        await asyncio.wait_for(asyncio.gather(*(v.first_part for v in everyone)), FIRST_PART_TIMEOUT_S)
        await asyncio.sleep(SETTLE_S)

        me = psutil.Process()
        before = await stream_status(port)
        parts0, bytes0, slow0 = [v.parts for v in viewers], sum(v.bytes for v in viewers), slow.parts
        cpu0, t0 = (cpu_seconds(server), cpu_seconds(me)), time.monotonic()
        await asyncio.sleep(seconds / 2)
        during = await stream_status(port)
        await asyncio.sleep(seconds / 2)
        dt = time.monotonic() - t0
        cpu1 = (cpu_seconds(server), cpu_seconds(me))
        got = np.array([v.parts - p for v, p in zip(viewers, parts0)], float)
        received_bytes = sum(v.bytes for v in viewers) - bytes0
        slow_parts = slow.parts - slow0
        after_window = await stream_status(port)
    finally:
        for v in everyone:
            v.close()

    # every client has gone: `watchers` must come back to 0, without any new picture needed
    t_closed = time.monotonic()
    after = await stream_status(port)
    while after["watchers"] != 0 and time.monotonic() - t_closed < WATCHERS_ZERO_TIMEOUT_S:
        await asyncio.sleep(0.05)
        after = await stream_status(port)

    pictures = after_window["pictures"] - before["pictures"]
    fps = got / dt
    return {
        "pictures": pictures,
        "pictures_per_s": round(pictures / dt, 1),
        "viewer_fps": _fps_summary(fps),
        "viewers_below_25_fps": int((fps < 25).sum()),
        "parts_sent": after_window["sent"] - before["sent"],
        "parts_received": int(got.sum()) + slow_parts,
        "part_kb": round(received_bytes / max(1.0, got.sum()) / 1024, 1),
        "encodes": after_window["encodes"] - before["encodes"],
        "variants_watched": 1,
        "watchers_during": during["watchers"],
        "watchers_after": after["watchers"],
        "watchers_zero_after_s": round(time.monotonic() - t_closed, 2) if after["watchers"] == 0 else None,
        "slow_viewer": {"fps": round(slow_parts / dt, 1), "read_kb_per_s": SLOW_READ_BYTES_PER_S // 1024,
                        "pictures_missed_pct": round(100 * (1 - slow_parts / max(1, pictures)))},
        "cpu_pct": {"server": round((cpu1[0] - cpu0[0]) / dt * 100), "viewers": round((cpu1[1] - cpu0[1]) / dt * 100)},
        "window_s": round(dt, 2),
    }


def cpu_label() -> str:
    from vcam.tools.bench import cpu_model

    return f"cpu ({cpu_model()}, {os.cpu_count()} cores)"


def run_bench(viewers: int = 200, seconds: float = 10.0, width: int = 512, height: int = 512,
              fps: float = 30.0, quality: int = 80) -> dict[str, Any]:
    """Start the server process, watch it with `viewers` clients (+1 slow one) for `seconds`."""
    ctx = mp.get_context("spawn")  # a clean child: no threads or loops of ours forked into it
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=serve, args=(width, height, fps, quality, theirs), name="bench-stream-server",
                        daemon=True)
    child.start()
    theirs.close()  # ours alone now: a child that dies is an EOF here, not a wait for the timeout
    try:
        try:
            if not ours.poll(60):
                raise RuntimeError("the stream server did not start within 60 s")
            port = ours.recv()
        except EOFError:
            raise RuntimeError(f"the stream server failed to start (exit code {child.exitcode})") from None
        measured = asyncio.run(_measure(port, viewers, seconds, psutil.Process(child.pid)))
        ours.send("stop")
        final = ours.recv() if ours.poll(10) else {}
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    return {"device": cpu_label(), "viewers": viewers, "seconds": seconds, "resolution": f"{width}x{height}",
            "camera_fps": fps, "jpeg_quality": quality, **measured, "server_final": final}


def format_table(r: dict[str, Any]) -> str:
    f = r["viewer_fps"]
    return "\n".join([
        f"stream fan-out on {r['device']}: {r['viewers']} viewers (+1 slow) of {r['resolution']} at "
        f"{r['camera_fps']:g} fps, JPEG q{r['jpeg_quality']} (~{r['part_kb']} KB), {r['window_s']} s",
        f"  pictures          {r['pictures']} ({r['pictures_per_s']}/s), encodes {r['encodes']} "
        f"({r['variants_watched']} variant watched)",
        f"  viewer fps        min {f['min']}  p5 {f['p5']}  median {f['median']}  max {f['max']}  "
        f"({r['viewers_below_25_fps']} below 25)",
        f"  parts             sent {r['parts_sent']}, received {r['parts_received']}",
        f"  slow viewer       {r['slow_viewer']['fps']} fps, missed {r['slow_viewer']['pictures_missed_pct']}% of "
        f"the pictures (reads {r['slow_viewer']['read_kb_per_s']} KB/s)",
        f"  watchers          during {r['watchers_during']} ({r['viewers']} + the slow one), "
        f"after all left {r['watchers_after']}",
        f"  cpu               server {r['cpu_pct']['server']}%, viewers {r['cpu_pct']['viewers']}% (of one core)",
    ])
