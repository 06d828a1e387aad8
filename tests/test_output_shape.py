"""The camera's shape (issue 11, "Output shaped for calls"): output.width x output.height (1280x720 by default)
for the virtual camera, the recording and the status cards, whatever the engine's size; output.fit says how a
picture of another aspect goes in, at both steps: source -> engine (capture) and engine -> camera (output)."""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import vcam.output.worker as worker_module
from engine.image import Fit
from tests.camera_backend import read_log
from tests.daemon_helpers import daemon_config, wait_until
from vcam.config import ConfigError, load_config
from vcam.daemon import Daemon
from vcam.output.worker import OutputWorker
from vcam.shm import Doorbell, FrameChannel, FrameMeta
from vcam.supervisor.capture import CaptureThread
from vcam.supervisor.child import Links

REPO = Path(__file__).resolve().parents[1]
GREY, RED, BLUE = (100, 100, 100), (255, 0, 0), (0, 0, 255)


# ---- configuration -----------------------------------------------------------------------------------------
def test_the_default_camera_is_1280x720_and_the_engine_works_at_about_16_9():
    cfg = load_config()
    assert (cfg.output.width, cfg.output.height, cfg.output.fps, cfg.output.fit) == (1280, 720, 30, "crop")
    # the engine's frame goes to the camera with little cut: 576x320 is 1.8, 16:9 is 1.78
    assert abs(cfg.engine.width / cfg.engine.height - 16 / 9) < 0.03


@pytest.mark.parametrize("value,why", [(1279, "multiple of 2"), (0, "greater than or equal to 32"),
                                       (5000, "less than or equal to 3840"), ("wide", "valid integer")])
def test_a_bad_output_width_is_one_line_naming_the_key_and_what_is_allowed(value, why):
    with pytest.raises(ConfigError) as e:
        load_config(None, {"output.width": value})
    assert len(e.value.lines) == 1, e.value.lines
    line = e.value.lines[0]
    assert f"output.width = {value!r}" in line and why in line and "(allowed: a multiple of 2 in 32-3840)" in line


def test_the_cli_refuses_a_bad_output_size_with_exit_2_and_one_line():
    r = subprocess.run([sys.executable, "-m", "vcam.tools.cli", "config", "show", "--set", "output.width=1279",
                        "--set", "output.fit=stretch"], capture_output=True, text=True, cwd=REPO, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 2, r.stderr
    assert any("output.width" in e and "1279" in e and "a multiple of 2 in 32-3840" in e for e in errors), errors
    assert any("output.fit" in e and "stretch" in e and "'crop' or 'pad'" in e for e in errors), errors


# ---- source -> engine: the capture thread ------------------------------------------------------------------
class _Channel:
    """INPUT as the capture thread sees it: a 16:9 engine frame."""

    def __init__(self, width: int = 160, height: int = 90):
        self.spec = SimpleNamespace(width=width, height=height)
        self.written: list[np.ndarray] = []

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        self.written.append(frame)


class _Portrait:
    """A 9:16 webcam: grey, red top rows, blue bottom rows, a white square in the middle."""

    status = {"error": None}

    def read(self) -> np.ndarray:
        img = np.full((320, 180, 3), GREY, np.uint8)
        img[:40], img[-40:] = RED, BLUE
        img[140:180, 70:110] = 255
        return img

    def close(self) -> None:
        pass


def _capture_one(fit: Fit) -> np.ndarray:
    channel = _Channel()
    cap = CaptureThread(_Portrait(), channel, SimpleNamespace(ring=lambda: None), fps=30, paced=False, fit=fit)
    assert cap.step()
    (frame,) = channel.written
    assert frame.shape == (90, 160, 3)
    return frame


def test_a_portrait_source_is_centre_cropped_into_the_engine_frame():
    frame = _capture_one("crop")
    assert (frame[40:50, 75:85] == 255).all()  # the centre survives, filling the frame
    assert not (frame == RED).all(axis=2).any() and not (frame == BLUE).all(axis=2).any()  # top, bottom cut
    assert (frame[:, 0] == GREY).all() and (frame[:, -1] == GREY).all()  # no bars


def test_a_portrait_source_is_padded_with_black_bars_into_the_engine_frame():
    frame = _capture_one("pad")
    # the picture is 51 x 90 (180 * 90 / 320 = 50.6), centred from column 54
    assert (frame[:, :54] == 0).all() and (frame[:, 105:] == 0).all()
    assert (frame[0, 55:104] == RED).all() and (frame[-1, 55:104] == BLUE).all()  # top and bottom survive
    assert (frame[44:46, 78:82] == 255).all()


# ---- engine -> camera: the output process ------------------------------------------------------------------
class _Probe:
    """A sink that keeps every frame it is sent."""

    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []
        self.status: dict = {}

    def send(self, frame: np.ndarray) -> None:
        self.sent.append(frame)

    def close(self) -> None:
        pass


@pytest.fixture
def output_worker(tmp_path):
    """make(**config overrides) -> (OutputWorker with a probe sink, the OUTPUT channel it reads), in this process."""
    made: list[tuple[OutputWorker, FrameChannel]] = []

    def make(**overrides) -> tuple[OutputWorker, FrameChannel]:
        cfg = daemon_config(tmp_path / "camera.log", **{"output.virtual_camera": "off", **overrides})
        ctx = mp.get_context("spawn")
        out = FrameChannel.create("test-out", cfg.engine.width, cfg.engine.height, 4)
        w = OutputWorker(cfg, Links(out.spec, Doorbell(ctx), out.spec, Doorbell(ctx), ctx.Queue(), ctx.Queue()))
        w.sinks = {"probe": _Probe()}
        made.append((w, out))
        return w, out

    yield make
    for w, out in made:
        w.channel.close()
        out.close()


def _engine_frame() -> np.ndarray:
    """A 128x96 (4:3) engine frame: 200 with bands of 50 at the top and bottom, which a 16:9 crop cuts."""
    img = np.full((96, 128, 3), 200, np.uint8)
    img[:12], img[-12:] = 50, 50
    return img


def test_the_camera_gets_each_new_frame_fitted_once_and_repeats_it_unscaled(output_worker, monkeypatch):
    w, out = output_worker()  # engine 128x96, camera 160x90 (SMALL_OUTPUT), crop
    fits = []
    real_fit = worker_module.fit_frame
    monkeypatch.setattr(worker_module, "fit_frame", lambda *a: fits.append(a[1:]) or real_fit(*a))
    t = time.monotonic()
    w.tick(t)  # nothing from the engine yet: the status card, at the camera's size
    for index in range(2):  # one group: an interpolated frame, then the engine frame
        out.write(_engine_frame(), FrameMeta(frame_id=1, capture_ts=t, group=1, index=index, count=2))
    w.take_frames(t)
    w.tick(t)
    w.tick(t)
    w.tick(t + 0.5)  # nothing due: the last frame again (well before output.stall_timeout_s)
    card, first, second, repeat = w.sinks["probe"].sent
    assert w.counts["new"] == 2 and w.counts["repeats"] == 1
    assert card.shape == first.shape == second.shape == (90, 160, 3)
    assert len(fits) == 2 and set(fits) == {(160, 90, "crop")}  # once per new frame, none for the repeat
    assert repeat is second
    assert (second == 200).all()  # cropped to 16:9: the bands are cut, the picture fills the camera


def test_pad_puts_the_whole_engine_frame_between_black_bars(output_worker):
    w, out = output_worker(**{"output.fit": "pad"})
    t = time.monotonic()
    out.write(_engine_frame(), FrameMeta(frame_id=1, capture_ts=t))
    w.take_frames(t)
    w.tick(t)
    (frame,) = w.sinks["probe"].sent
    # 128x96 scaled to 120x90, centred: 20 black columns each side
    assert frame.shape == (90, 160, 3) and (frame[:, :20] == 0).all() and (frame[:, 140:] == 0).all()
    assert (frame[0, 21:139] == 50).all() and (frame[45, 21:139] == 200).all()  # the bands are shown


def test_the_output_process_does_not_import_torch():
    code = "import sys, vcam.output.worker; assert 'torch' not in sys.modules, 'the output process imported torch'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr


# ---- the whole daemon ----------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_a_daemon_with_the_default_output_size_sends_1280x720_frames(tmp_path):
    camera_log = tmp_path / "camera.log"
    d = Daemon(daemon_config(camera_log, output_size=None))  # engine 128x96, camera at its default size
    d.start()
    try:
        wait_until(lambda: d.status()["output"].get("new", 0) > 10, timeout=60)
        rows = read_log(camera_log)
    finally:
        d.stop()
    assert {r[3] for r in rows} == {1280 * 720 * 3}  # every frame sent, status cards included
    assert rows[-1][2] > 10  # a picture, not black


def test_the_daemon_hands_output_fit_to_the_capture_thread(tmp_path):
    d = Daemon(daemon_config(tmp_path / "camera.log", **{"output.fit": "pad"}))
    d.start()
    try:
        assert d.capture is not None and d.capture.fit == "pad"  # the source -> engine step pads too
    finally:
        d.stop()
