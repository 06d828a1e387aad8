"""The control server's stream source: its own reader of the OUTPUT channel, one JPEG per picture for
every viewer (fan-out: a slow viewer skips pictures, nobody else does), an exact `watchers` count,
status cards, the cells overlay and the token rule for the picture routes."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.daemon_helpers import wait_until
from vcam.config import ControlConfig, load_config
from vcam.control import stream as stream_module
from vcam.control.routes import create_app
from vcam.control.server import start_api_server
from vcam.control.state import ControlState
from vcam.control.stream import BOUNDARY, MultipartResponse, StreamSource, overlay_cells
from vcam.shm import FrameChannel, FrameMeta
from vcam.tools.bench.stream import open_viewer, stream_status

W, H = 64, 48
TOKEN = "test-token-0123456789abcdef"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def channel():
    ch = FrameChannel.create("test", W, H, slots=8)
    yield ch
    ch.close()


@pytest.fixture
def source(channel):
    s = StreamSource(channel.spec, fps=30, stall_timeout_s=0.5)
    yield s
    s.stop()


def solid(value: int) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def decode(jpeg: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


async def until(pred: Callable[[], object], timeout: float = 20.0) -> None:
    """wait_until for coroutines: the event loop keeps running the viewers meanwhile."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


async def collect(parts: AsyncGenerator[bytes, None], into: list[bytes]) -> None:
    async for part in parts:
        into.append(part)


def test_viewers_share_one_encode_per_picture_and_variant(source):
    async def watch() -> list[list[bytes]]:
        got: list[list[bytes]] = [[], [], [], []]
        viewers = [source.multipart(False), source.multipart(False), source.multipart(False), source.multipart(True)]
        tasks = [asyncio.create_task(collect(v, into)) for v, into in zip(viewers, got)]
        await until(lambda: source.watchers == 4)
        mask = np.zeros((H // 16, W // 16), bool)
        mask[0, 0] = True  # (so that the tinted pictures differ from the plain ones)
        for i in range(5):
            source.publish(solid(40 * i), mask)  # (a resend may repeat a picture on a busy machine: distinct ones count)
            await until(lambda: all(len(set(g)) > i for g in got))
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert source.watchers == 0
        return got

    plain_a, plain_b, plain_c, tinted = asyncio.run(watch())
    assert set(plain_a) == set(plain_b) == set(plain_c)  # the same bytes, shared
    assert len(set(plain_a)) == 5 and all(p.startswith(f"--{BOUNDARY}\r\nContent-Type: image/jpeg".encode()) for p in plain_a)
    assert len(set(tinted)) == 5 and not set(tinted) & set(plain_a)  # the overlay variant has its own encode
    # once per picture and variant watched, not once per viewer
    assert source.counts["encodes"] == 10 and source.counts["pictures"] == 5
    assert source.counts["sent"] >= 20


def test_a_slow_viewer_skips_to_the_newest_picture_and_holds_up_nobody(source):
    async def watch() -> tuple[list[bytes], list[bytes]]:
        fast: list[bytes] = []
        slow = source.multipart(False)
        task = asyncio.create_task(collect(source.multipart(False), fast))
        first = asyncio.create_task(anext(slow))  # the slow one takes one part, then is busy elsewhere
        await until(lambda: source.watchers == 2)
        source.publish(solid(0), None)
        slow_got = [await first]
        for i in range(1, 6):
            source.publish(solid(40 * i), None)
            await until(lambda: len(set(fast)) > i)  # the fast viewer gets every picture meanwhile
        slow_got.append(await anext(slow))  # back: the newest picture, nothing in between
        await slow.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return fast, slow_got

    fast, slow = asyncio.run(watch())
    assert len(set(fast)) == 6 and slow == [fast[0], fast[-1]]
    assert abs(decode(part_jpeg(slow[1])).mean() - 200) < 5
    assert source.watchers == 0


def test_a_viewer_gets_the_picture_again_when_nothing_changes(source, monkeypatch):
    monkeypatch.setattr(stream_module, "RESEND_S", 0.1)  # the keep-alive, sooner

    async def watch() -> list[bytes]:
        got: list[bytes] = []
        task = asyncio.create_task(collect(source.multipart(False), got))
        await until(lambda: source.watchers == 1)
        source.publish(solid(90), None)
        await until(lambda: len(got) >= 3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return got

    got = asyncio.run(watch())
    assert len(set(got)) == 1 and source.counts["encodes"] == 1


def test_a_viewer_parked_in_a_full_socket_is_counted_out_when_its_client_leaves(source):
    """The client goes away while its viewer waits in a send that never completes (a full socket):
    `watchers` drops anyway, at once, not when the garbage collector gets to the generator."""
    async def serve() -> None:
        body_sent = asyncio.Event()
        never = asyncio.Event()

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                body_sent.set()
                await never.wait()  # the socket is full and stays so

        async def receive() -> dict:
            await body_sent.wait()
            return {"type": "http.disconnect"}

        response = MultipartResponse(source.multipart(False))
        task = asyncio.create_task(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send))
        await until(lambda: source.watchers == 1)
        source.publish(solid(10), None)
        await asyncio.wait_for(task, 20)
        assert source.watchers == 0  # while `response` (and its generator) are still referenced here

    asyncio.run(serve())


def part_jpeg(part: bytes) -> bytes:
    return part.split(b"\r\n\r\n", 1)[1][:-2]


def test_reads_the_channel_only_while_wanted_and_shows_a_card_when_frames_stop(channel, source):
    source.start()
    time.sleep(0.2)
    assert source.status["reading"] is False and source.counts["pictures"] == 0  # nobody asked: no reads
    # nothing written yet: the first snapshot is a card, not an error
    card = decode(source.snapshot(False))
    assert card.shape == (H, W, 3) and source.showing.startswith("card: waiting")
    for i in range(10):
        channel.write(solid(200), FrameMeta(i, time.monotonic(), group=i))
        time.sleep(0.02)
    wait_until(lambda: source.showing == "frames", timeout=5)
    assert abs(decode(source.snapshot(False)).mean() - 200) < 5
    source.set_mode("paused")
    wait_until(lambda: source.showing == "card: paused", timeout=5)  # after stall_timeout_s without frames
    source.notice = lambda: "engine restarting (killed by signal 9)"  # the supervisor's notice, as on the camera
    wait_until(lambda: source.showing == "card: paused / engine restarting (killed by signal 9)", timeout=5)


def test_a_viewer_who_comes_back_to_a_card_that_has_not_changed_gets_it(channel, source):
    source.start()
    assert source.snapshot(False) is not None and source.showing.startswith("card: waiting")  # no frames: a card
    wait_until(lambda: not source.status["reading"], timeout=10)  # the reading session ended: nobody watches
    # the same card text as before: it must be published again for the new session, not skipped
    jpeg = source.snapshot(False)
    assert jpeg is not None and decode(jpeg).shape == (H, W, 3)


def test_groups_play_in_order(channel, source):
    source.start()
    source.snapshot(False)  # start reading
    shown = []
    seen = -1
    for g in range(6):
        for i in range(3):  # two interpolated frames, then the engine frame
            channel.write(solid(100 + 5 * (3 * g + i)), FrameMeta(3 * g + i, time.monotonic(), group=g, index=i, count=3))
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            version, jpeg = source.jpeg(False)
            if version != seen:
                seen = version
                mean = decode(jpeg).mean()
                if mean > 95:  # not the card shown before the first frame
                    shown.append(round((mean - 100) / 5))
            time.sleep(0.005)
    assert shown == sorted(shown) and len(set(shown)) >= 6, shown
    assert any(v % 3 != 2 for v in shown), shown  # interpolated frames are played, not only engine frames  # in order, interpolated ones included


def test_overlay_tints_only_recomputed_cells():
    frame = solid(100)
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    out = overlay_cells(frame, mask)
    assert (out[16:32, 32:48, 0] > 150).all() and (out[:16] == 100).all()
    assert overlay_cells(frame, None) is frame


def test_picture_routes_follow_the_api_token_rule(source):
    source.publish(solid(120), None)
    state = ControlState(load_config())
    open_app = TestClient(create_app(state, dict, None, stream=source, local_only=True), base_url="http://127.0.0.1")
    r = open_app.get("/frame.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and decode(r.content).shape == (H, W, 3)
    assert open_app.get("/frame.jpg?overlay=bogus").status_code == 422
    assert open_app.get("/frame.jpg", headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding
    guarded = TestClient(create_app(state, dict, TOKEN, stream=source))
    assert guarded.get("/frame.jpg").status_code == 401
    assert guarded.get("/stream.mjpg").status_code == 401
    assert guarded.get(f"/frame.jpg?token={TOKEN}").status_code == 200
    assert guarded.get("/frame.jpg", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/").status_code == 200  # the page holds nothing secret


def test_no_stream_no_picture_routes():
    http = TestClient(create_app(ControlState(load_config()), dict, None))
    assert http.get("/stream.mjpg").status_code == 404 and http.get("/frame.jpg").status_code == 404


def test_cells_overlay_uses_the_mask_that_came_with_the_frame(channel, source):
    source.start()
    source.snapshot(False)  # start reading
    mask = np.zeros(channel.mask_shape, bool)
    mask[0, 0] = True
    for i in range(5):
        channel.write(solid(100), FrameMeta(i, time.monotonic(), group=i, mask=mask))
        time.sleep(0.02)
    wait_until(lambda: source.showing == "frames", timeout=5)
    plain, tinted = decode(source.snapshot(False)), decode(source.snapshot(True))
    redder = tinted[..., 0].astype(int) - plain[..., 0].astype(int) > 20
    assert redder[:16, :16].mean() > 0.9 and redder[16:, 16:].mean() < 0.01


def feed(channel: FrameChannel, stop: threading.Event) -> None:
    """The inference process's stand-in: a new frame about 30 times a second until `stop`."""
    i = 0
    while not stop.wait(1 / 30):
        channel.write(solid(i % 250), FrameMeta(i, time.monotonic(), group=i))
        i += 1


async def status_until(port: int, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
    """The stream's status over the API, once `pred` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        st = await stream_status(port)
        if pred(st):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"stream status {st} still not as expected after {timeout} s")
        await asyncio.sleep(0.05)


def test_many_viewers_over_http_exact_watchers_and_one_encode_per_picture(channel, source):
    """50 real HTTP viewers (45 plain, 5 with the overlay): each gets pictures, `watchers` says 50, the
    encodes follow the pictures (not the viewers), and `watchers` is back at exactly 0 once they have
    gone: half while pictures flow, half while the card stands still (no new picture to wake them)."""
    n, tinted = 50, 5
    stop = threading.Event()
    feeder = threading.Thread(target=feed, args=(channel, stop), daemon=True)
    source.start()
    server = start_api_server(ControlConfig(port=0), ControlState(load_config()), lambda: {"stream": source.status},
                              source)

    async def watch() -> None:
        viewers = [await open_viewer(server.port) for _ in range(n - tinted)]
        viewers += [await open_viewer(server.port, "/stream.mjpg?overlay=cells") for _ in range(tinted)]
        try:
            await asyncio.wait_for(asyncio.gather(*(v.first_part for v in viewers)), 30)
            st = await stream_status(server.port)
            assert st["watchers"] == n
            await until(lambda: all(v.parts >= 5 for v in viewers), timeout=30)
            st = await stream_status(server.port)
            # at most once per picture and variant watched, however many viewers (50 would be 25x this)
            assert 0 < st["encodes"] <= 2 * st["pictures"], st
            for v in viewers[::2]:
                v.close()
            await status_until(server.port, lambda st: st["watchers"] == n // 2)
            stop.set()  # the frames stop: after stall_timeout_s the card, then no new picture at all
            await until(lambda: source.showing.startswith("card"))
            for v in viewers[1::2]:
                v.close()
            await status_until(server.port, lambda st: st["watchers"] == 0)
        finally:
            for v in viewers:
                v.close()

    try:
        feeder.start()
        asyncio.run(watch())
        assert source.watchers == 0
    finally:
        stop.set()
        server.stop()
        feeder.join(5)
