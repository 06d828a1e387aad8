"""Supervisor behaviour beyond a single restart: backoff, tracebacks; and the recording sink."""
import multiprocessing as mp
import os
import signal
import time

import cv2
import numpy as np
import pytest

from tests.daemon_helpers import daemon_config, wait_until
from vcam.supervisor.child import Links, run_child
from vcam.daemon import Daemon
from vcam.messages import ChildError
from vcam.shm import ChannelSpec, Doorbell
from vcam.output.sinks.recorder import RecorderSink


@pytest.mark.timeout(120)
def test_repeated_crashes_back_off_instead_of_looping_hot(tmp_path):
    d = Daemon(daemon_config(tmp_path / "camera.log"))
    d.start()
    try:
        delays = []
        for n in range(1, 5):
            pid = wait_until(lambda: (s := d.status()["inference"])["alive"] and s["pid"], timeout=20)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: d.status()["inference"]["restarts"] == n, timeout=20, every=0.01)
            delays.append(time.monotonic() - t0)
        assert delays[0] < 1.0  # the first restart is immediate
        assert delays[3] > 1.4 and delays[3] > 2 * delays[0]  # 0.2, 0.4, 0.8, 1.6 s
        assert d.status()["output"]["restarts"] == 0  # the camera side never went down
    finally:
        d.stop()


def _explode() -> None:
    raise RuntimeError("engine exploded")


def _child_main(links: Links) -> None:
    run_child("inference", links, "critical", _explode)


def test_a_child_that_raises_reports_its_traceback_before_dying():
    ctx = mp.get_context("spawn")
    status = ctx.Queue()
    spec = ChannelSpec("unused", 16, 16, 2)
    links = Links(spec, Doorbell(ctx), spec, Doorbell(ctx), ctx.Queue(), status)
    p = ctx.Process(target=_child_main, args=(links,))
    p.start()
    msg = status.get(timeout=30)
    p.join(10)
    assert p.exitcode == 1
    assert isinstance(msg, ChildError) and msg.role == "inference"
    assert msg.error == "RuntimeError: engine exploded" and "Traceback" in msg.traceback and "body" in msg.traceback


def test_recorder_writes_a_readable_video(tmp_path):
    path = tmp_path / "out" / "rec.avi"
    rec = RecorderSink(path, 64, 48, 10)
    for i in range(5):
        rec.send(np.full((48, 64, 3), 40 * i, np.uint8))
    rec.close()
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f.mean())
    assert len(frames) == 5 and rec.status["frames"] == 5 and rec.status["error"] is None
    assert frames[4] > frames[1] + 60


def test_recorder_bad_path_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rec = RecorderSink(blocker / "rec.mp4", 64, 48, 10)  # its folder cannot exist: a file is in the way
    rec.send(np.zeros((48, 64, 3), np.uint8))
    rec.close()
    assert rec.status["frames"] == 0 and "cannot record to" in rec.status["error"]
