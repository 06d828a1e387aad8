import time

import cv2
import numpy as np
import pytest

from vcam.config import SourceConfig
from vcam.sources import open_source
from vcam.sources.synthetic import SyntheticScene
from vcam.sources.video_file import VideoFileSource
from vcam.sources.webcam import WebcamSource


def test_synthetic_scene_is_deterministic_and_moves_the_requested_fraction():
    a, b = SyntheticScene(256, 256, 0.25, seed=1), SyntheticScene(256, 256, 0.25, seed=1)
    assert np.array_equal(a.frame(10), b.frame(10))
    f0 = a.frame(0)
    covered = np.mean([np.any(a.frame(i) != a.frame(i - 1), axis=2).mean() for i in range(1, 20)])
    assert 0.02 < covered < 0.6
    still = SyntheticScene(256, 256, 0.0)
    assert np.array_equal(still.frame(0), still.frame(50))
    pan = SyntheticScene(256, 256, 1.0)
    assert np.any(pan.frame(0) != pan.frame(30), axis=2).mean() > 0.8
    assert f0.dtype == np.uint8 and f0.shape == (256, 256, 3)
    with pytest.raises(ValueError, match="dynamic_fraction"):
        SyntheticScene(64, 64, 1.5)


class FakeCapture:
    """A cv2.VideoCapture double whose camera can be unplugged and plugged back in."""

    plugged = True

    def __init__(self, device):
        self.device = device

    def isOpened(self):
        return FakeCapture.plugged

    def set(self, *_):
        return True

    def read(self):
        if not FakeCapture.plugged:
            return False, None
        return True, np.full((48, 64, 3), 7, np.uint8)

    def release(self):
        pass


def test_webcam_disappearing_and_returning_is_retried_with_backoff():
    FakeCapture.plugged = True
    cam = WebcamSource("0", 64, 48, 30, capture_factory=FakeCapture, backoff_initial=0.05, backoff_max=0.2)
    assert cam.device == 0
    assert cam.read() is not None and cam.status["connected"]
    FakeCapture.plugged = False
    assert cam.read() is None
    assert not cam.status["connected"] and "unplugged" in cam.status["error"]
    assert cam.read() is None and "cannot open" not in cam.status["error"]  # backing off, not hammering
    time.sleep(0.06)
    assert cam.read() is None and "cannot open webcam 0" in cam.status["error"]
    FakeCapture.plugged = True
    deadline = time.monotonic() + 2
    frame = None
    while frame is None and time.monotonic() < deadline:
        frame = cam.read()
        time.sleep(0.01)
    assert frame is not None and cam.status["connected"] and cam.status["reconnects"] == 1


def test_video_file_loops(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * (i + 1), np.uint8))
    writer.release()
    src = VideoFileSource(path)
    means = [src.read().mean() for _ in range(7)]
    assert src.status["loops"] == 2
    assert abs(means[0] - means[3]) < 3 and abs(means[1] - means[4]) < 3


def test_missing_video_file_is_reported_not_raised(tmp_path):
    src = VideoFileSource(tmp_path / "nope.mp4")
    assert src.read() is None and "does not exist" in src.status["error"]


def test_open_source_by_kind():
    assert open_source(SourceConfig(kind="synthetic", capture_width=64, capture_height=48)).read().shape == (48, 64, 3)
