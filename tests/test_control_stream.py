"""The control server's stream source: its own reader of the OUTPUT channel, one JPEG per picture for
every viewer, status cards, the cells overlay and the token rule for the picture routes."""
from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.daemon_helpers import wait_until
from vcam.config import load_config
from vcam.control.routes import create_app
from vcam.control.state import ControlState
from vcam.control.stream import BOUNDARY, StreamSource, overlay_cells
from vcam.shm import FrameChannel, FrameMeta

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


def test_two_viewers_get_each_picture_encoded_once(source):
    async def watch() -> tuple[list[bytes], list[bytes]]:
        a, b = source.multipart(False), source.multipart(False)
        got_a, got_b = [], []
        for i in range(5):
            source.publish(solid(40 * i), None)
            got_a.append(await anext(a))
            got_b.append(await anext(b))
        assert source.watchers == 2
        await a.aclose()
        await b.aclose()
        return got_a, got_b

    got_a, got_b = asyncio.run(watch())
    assert got_a == got_b  # the same bytes, shared
    assert len(set(got_a)) == 5 and all(p.startswith(f"--{BOUNDARY}\r\nContent-Type: image/jpeg".encode()) for p in got_a)
    assert source.counts["encodes"] == 5 and source.counts["pictures"] == 5
    assert source.watchers == 0


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
