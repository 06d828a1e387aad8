"""The daemon end to end with real processes, shared memory and the real pyvirtualcam Camera."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import cv2
import numpy as np
import pytest

from tests.camera_backend import read_log
from tests.daemon_helpers import daemon_config, shm_names, shown_prompt_version, wait_until
from vcam.daemon import Daemon

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def camera_log(tmp_path):
    return tmp_path / "camera.log"


def frames_between(log: Path, t0: float, t1: float) -> np.ndarray:
    return np.array([r[0] for r in read_log(log) if t0 <= r[0] <= t1])


def test_frames_flow_to_the_virtual_camera_with_metadata(camera_log):
    before = shm_names()
    d = Daemon(daemon_config(camera_log))
    d.start()
    try:
        wait_until(lambda: d.status()["output"].get("new", 0) > 20)
        st = d.status()
        cam = st["output"]["sinks"]["virtual_camera"]
        assert cam["active"] and cam["backend"] == "tests.camera_backend:RecordingBackend"
        last = st["output"]["last_frame"]
        assert last["prompt_version"] == st["settings"]["prompt_version"] and last["frame_id"] > 0
        assert 0 < st["output"]["latency_p50_ms"] < 2000  # measured (bench pipeline); here: no backlog builds up
        rows = read_log(camera_log)
        assert rows[-1][3] == 160 * 90 * 3 and rows[-1][2] > 10  # the output size (SMALL_OUTPUT); real content
        # a prompt change: later frames carry the new prompt_version
        new = d.state.set_prompt("pencil sketch").prompt_version
        wait_until(lambda: shown_prompt_version(d) == new, timeout=5)
    finally:
        d.stop()
    assert shm_names() == before


@pytest.mark.parametrize("role", ["inference", "output"])
def test_kill_9_of_a_child_restarts_it_and_the_camera_keeps_receiving(camera_log, role):
    before = shm_names()
    d = Daemon(daemon_config(camera_log))
    d.start()
    try:
        wait_until(lambda: d.status()["output"].get("new", 0) > 10)
        pid = d.status()[role]["pid"]
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: d.status()[role]["restarts"] == 1 and d.status()[role]["alive"], timeout=2.0)
        assert time.monotonic() - t_kill < 2.0
        assert "killed by signal 9" in d.status()[role]["last_error"]
        t_back = time.monotonic()
        # new frames reach the camera again
        wait_until(lambda: len(frames_between(camera_log, t_back + 0.5, time.monotonic())) > 15, timeout=15)
        if role == "inference":
            # the output process never stopped feeding the camera at its fps
            gaps = np.diff(frames_between(camera_log, t_kill - 0.5, time.monotonic()))
            assert gaps.max() < 0.1, gaps.max()
        assert shm_names() - before  # the segments are still there while running
    finally:
        d.stop()
    assert shm_names() == before


def test_stalled_engine_shows_status_card_and_camera_keeps_its_fps(camera_log):
    d = Daemon(daemon_config(camera_log, **{"output.stall_timeout_s": 0.3}))
    d.start()
    try:
        wait_until(lambda: d.status()["output"].get("new", 0) > 5)
        pid = d.status()["inference"]["pid"]
        os.kill(pid, signal.SIGSTOP)  # a hung engine: alive, silent
        try:
            wait_until(lambda: d.status()["output"]["showing"] == "card", timeout=5)
            cards = d.status()["output"]["cards"]
            t0 = time.monotonic()
            time.sleep(1.0)
            times = frames_between(camera_log, t0, time.monotonic())
            assert 24 <= len(times) <= 34  # ~30 fps while nothing new comes
            assert d.status()["output"]["cards"] > cards
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: d.status()["output"]["showing"] == "frames", timeout=5)
        d.state.update(mode="paused")  # paused: a card too, and capture stops
        wait_until(lambda: d.status()["output"]["showing"] == "card" and d.status()["source"]["paused"], timeout=5)
        d.state.update(mode="live")
        wait_until(lambda: d.status()["output"]["showing"] == "frames", timeout=5)
    finally:
        d.stop()


def test_engine_that_cannot_start_is_reported_and_frames_keep_flowing(camera_log, tmp_path):
    d = Daemon(daemon_config(camera_log, **{"engine.name": "flux2", "engine.model": str(tmp_path / "no-such-model")}))
    d.start()
    try:
        err = wait_until(lambda: d.status()["inference"].get("engine_error"), timeout=60)
        assert "no-such-model" in err and "pass through" in err
        wait_until(lambda: d.status()["output"].get("new", 0) > 10)
    finally:
        d.stop()


# the stream is served by the control server, on its one port
STREAM = {"control.enabled": True, "control.port": 0}


def test_mjpeg_stream_over_real_http_on_the_control_port(camera_log):
    d = Daemon(daemon_config(camera_log, **{"output.virtual_camera": "off", **STREAM}))
    d.start()
    try:
        st = d.status()
        url = st["preview_url"]
        assert url == st["control_url"] + "/" and st["stream_url"] == url + "stream.mjpg"
        assert url.startswith("http://127.0.0.1:")
        wait_until(lambda: d.status()["output"].get("new", 0) > 3)
        page = httpx.get(url, timeout=5)
        assert page.status_code == 200 and "stream.mjpg" in page.text
        jpg = httpx.get(url + "frame.jpg", timeout=5)
        img = cv2.imdecode(np.frombuffer(jpg.content, np.uint8), cv2.IMREAD_COLOR)
        assert jpg.headers["content-type"] == "image/jpeg" and img.shape == (96, 128, 3)
        with httpx.stream("GET", url + "stream.mjpg", timeout=5) as r:
            assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
            data = b""
            for chunk in r.iter_bytes():
                data += chunk
                if data.count(b"--fluxrtframe") >= 2:
                    break
        assert data.count(b"Content-Type: image/jpeg") >= 1
        # DNS rebinding / another site's page: refused
        assert httpx.get(url + "frame.jpg", headers={"Host": "evil.example"}, timeout=5).status_code == 403
        assert httpx.get(url + "frame.jpg", headers={"Origin": "http://evil.example"}, timeout=5).status_code == 403
    finally:
        d.stop()


def _run_cli(camera_log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "FLUXRT_TEST_CAMERA_LOG": str(camera_log), "PYTHONPATH": str(REPO)}
    sets = ["engine.name=passthrough", "engine.width=128", "engine.height=96", "interpolation.method=none",
            f"output.camera_backend={daemon_config(camera_log).output.camera_backend}", "output.virtual_camera=on",
            "control.port=0", *extra]
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.Popen([sys.executable, "-m", "vcam.tools.cli", "run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_cli_run_leaves_nothing_in_dev_shm(camera_log, how):
    p = _run_cli(camera_log)
    try:
        wait_until(lambda: camera_log.exists() and len(read_log(camera_log)) > 10, timeout=60)
        assert shm_names(p.pid)  # the daemon's own segments (their names carry its PID)
        p.send_signal(getattr(signal, how))
        p.wait(timeout=20)
        if how != "SIGKILL":
            assert p.returncode == 0, p.stderr.read()
            out = p.stdout.read()
            assert "page:" in out and "/stream.mjpg" in out, out
        # after kill -9 of the supervisor the children notice and exit, and multiprocessing's
        # resource tracker unlinks the segments the supervisor created
        wait_until(lambda: not shm_names(p.pid), timeout=15)
    finally:
        if p.poll() is None:
            p.kill()


def test_interpolated_groups_reach_the_camera_in_order(camera_log):
    d = Daemon(daemon_config(camera_log, **{"interpolation.method": "blend", "interpolation.factor": 3,
                                            "source.fps": 10, "output.fps": 30}))
    d.start()
    try:
        wait_until(lambda: d.status()["output"].get("groups", 0) > 8, timeout=30)
        out, inf = d.status()["output"], d.status()["inference"]
        assert inf["interpolator"] == "blend" and inf["factor"] == 3
        assert out["new"] > out["groups"]  # interpolated frames were shown between engine frames
        # every frame of every group was shown or deliberately dropped (a group that comes early replaces the
        # rest of the one playing). The first group is its engine frame alone (nothing to interpolate from),
        # and the last one may still be playing: 2 + 3 frames short at most
        assert out["new"] + out["dropped_interpolated"] >= 3 * out["groups"] - 5, out
        assert out["engine_frames_shown"] >= out["groups"] - 1  # none lost (one may be in flight)
        assert out["lost"] == 0  # (an interpolated frame may be dropped when a group comes early: by design)
    finally:
        d.stop()


def test_corrupt_rife_checkpoint_falls_back_to_flow_and_says_so(camera_log, tmp_path):
    bad = tmp_path / "flownet.pkl"
    bad.write_bytes(b"this is not a checkpoint")
    d = Daemon(daemon_config(camera_log, **{"interpolation.method": "rife-v4.25", "interpolation.factor": 2,
                                            "interpolation.model_path": str(bad)}))
    d.start()
    try:
        note = wait_until(lambda: d.status()["inference"].get("interpolator_note"), timeout=60)
        assert d.status()["inference"]["interpolator"] == "flow"
        assert str(bad) in note or "flownet.pkl" in note
        wait_until(lambda: d.status()["output"].get("new", 0) > 10)
    finally:
        d.stop()


def test_control_port_in_use_is_a_clear_error_and_leaves_nothing_behind(camera_log):
    import socket

    from vcam.control.server import ApiStartError

    before = shm_names()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(ApiStartError, match=f"127.0.0.1:{port}.*control.port"):
            Daemon(daemon_config(camera_log, **{**STREAM, "control.port": port})).start()
    finally:
        taken.close()
    assert shm_names() == before


class MjpegWatcher(threading.Thread):
    """Reads /stream.mjpg in the background: the arrival time of every complete part, and any problem."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.times, self.errors = url, [], []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=10) as r:
                if r.status_code != 200 or not r.headers["content-type"].startswith("multipart/x-mixed-replace"):
                    self.errors.append(f"HTTP {r.status_code} {r.headers.get('content-type')}")
                    return
                buf = b""
                for chunk in r.iter_bytes():
                    buf += chunk
                    *parts, buf = buf.split(b"--fluxrtframe\r\n")
                    for part in parts:
                        if not part:
                            continue
                        head, _, body = part.partition(b"\r\n\r\n")
                        if b"Content-Type: image/jpeg" not in head or not body.startswith(b"\xff\xd8"):
                            self.errors.append(f"not a JPEG part: {head[:80]!r}")
                        self.times.append(time.monotonic())
                    if self.done.is_set():
                        return
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))


def test_killing_the_output_process_interrupts_neither_camera_nor_stream(camera_log):
    d = Daemon(daemon_config(camera_log, **STREAM))
    d.start()
    watcher = MjpegWatcher(d.status()["stream_url"])
    try:
        wait_until(lambda: d.status()["output"].get("new", 0) > 5)
        watcher.start()
        wait_until(lambda: len(watcher.times) > 10, timeout=10)
        t_kill = time.monotonic()
        os.kill(d.status()["output"]["pid"], signal.SIGKILL)
        wait_until(lambda: d.status()["output"]["restarts"] == 1 and d.status()["output"]["alive"], timeout=10)
        # the new output process feeds the camera again
        wait_until(lambda: len(frames_between(camera_log, t_kill + 0.1, time.monotonic())) > 10, timeout=30)
        t_end = time.monotonic()
        watcher.done.set()
        watcher.join(timeout=10)
        assert not watcher.errors, watcher.errors
        # the warm standby took over: the camera is back within 1 s (a fresh process took 5-9 s)
        cam = np.concatenate([[t_kill], frames_between(camera_log, t_kill, t_end)])
        assert np.diff(cam).max() < 1.0, np.diff(cam).max()
        # and the stream, read by the supervisor itself, never depended on the output process
        stream = np.array([t for t in watcher.times if t_kill - 0.5 <= t <= t_end])
        assert np.diff(stream).max() < 1.5, np.diff(stream).max()
        assert d.status()["stream"]["showing"] == "frames"
    finally:
        watcher.done.set()
        d.stop()


def test_two_viewers_share_each_encoded_picture(camera_log):
    d = Daemon(daemon_config(camera_log, **{"output.virtual_camera": "off", **STREAM}))
    d.start()
    viewers = [MjpegWatcher(d.status()["stream_url"]) for _ in range(2)]
    try:
        for v in viewers:
            v.start()
        wait_until(lambda: all(len(v.times) > 20 for v in viewers), timeout=20)
        st = d.status()["stream"]
        assert st["watchers"] == 2
        # one encode per picture at most, however many watch (each viewer encoding would double it)
        assert 0 < st["encodes"] <= st["pictures"], st
        assert not any(v.errors for v in viewers)
    finally:
        for v in viewers:
            v.done.set()
        d.stop()


@pytest.mark.timeout(300)
def test_flux2_tiny_runs_end_to_end_through_the_virtual_camera(camera_log):
    # model "test" selects the smallest tiny FLUX.2 preset; it is built offline on first use
    d = Daemon(daemon_config(camera_log, **{"engine.name": "flux2-tiny", "engine.model": "test", "source.fps": 10}))
    d.start()
    try:
        wait_until(lambda: d.status()["inference"].get("frames", 0) >= 3, timeout=240)
        inf = d.status()["inference"]
        assert inf["engine"] == "flux2-tiny" and inf["engine_error"] is None
        assert set(inf["stages_ms"]) >= {"prepare", "denoise", "decode"} and inf["stages_ms"]["denoise"] > 0
        version = d.state.set_prompt("a bronze statue").prompt_version
        wait_until(lambda: shown_prompt_version(d) == version, timeout=60)
        rows = read_log(camera_log)
        assert rows[-1][3] == 160 * 90 * 3  # the output size, whatever the engine's
        assert len({r[1] for r in rows[-20:]}) > 1  # edited frames change (the scene moves)
    finally:
        d.stop()


@pytest.mark.timeout(300)
def test_unreadable_style_reference_is_reported_and_editing_continues(camera_log, tmp_path):
    d = Daemon(daemon_config(camera_log, **{"engine.name": "flux2-tiny", "engine.model": "test", "source.fps": 10}))
    d.start()
    try:
        wait_until(lambda: d.status()["inference"].get("frames", 0) >= 2, timeout=240)
        d.state.update(cache={"tau": 8.0})  # a live cache change is applied, not fatal
        d.state.presets.append(type(d.state.presets[0])(name="styled", prompt="x", style_reference=tmp_path / "gone.png"))
        d.state.apply_preset("styled")
        err = wait_until(lambda: d.status()["inference"].get("settings_error"), timeout=30)
        assert "gone.png" in err and "not a readable image" in err
        done = d.status()["inference"]["frames"]
        wait_until(lambda: d.status()["inference"]["frames"] > done + 1, timeout=60)
        assert d.status()["inference"]["restarts"] == 0
    finally:
        d.stop()


@pytest.mark.timeout(300)
def test_preview_overlays_the_cells_the_spatial_cache_recomputed(camera_log):
    d = Daemon(daemon_config(camera_log, **{"engine.name": "flux2-tiny", "engine.model": "test", "source.fps": 10,
                                            "engine.width": 128, "engine.height": 128,
                                            "source.dynamic_fraction": 0.1, "output.virtual_camera": "off",
                                            **STREAM}))
    d.start()
    try:
        wait_until(lambda: d.status()["inference"].get("frames", 0) >= 4, timeout=240)
        url = d.status()["preview_url"]
        frac = d.status()["inference"]["cache"]["active_fraction"]
        assert 0 < frac < 1  # a small object moves: only part of the grid is recomputed
        plain = cv2.imdecode(np.frombuffer(httpx.get(url + "frame.jpg", timeout=5).content, np.uint8), cv2.IMREAD_COLOR)
        tinted = cv2.imdecode(np.frombuffer(httpx.get(url + "frame.jpg?overlay=cells", timeout=5).content, np.uint8),
                              cv2.IMREAD_COLOR)
        assert plain.shape == tinted.shape == (128, 128, 3)
        assert httpx.get(url + "frame.jpg?overlay=bogus", timeout=5).status_code == 422
        # some cells are tinted (red up in BGR's last channel), and not all of them
        redder = (tinted[..., 2].astype(int) - plain[..., 2].astype(int)) > 20
        assert 0.01 < redder.mean() < 0.99
    finally:
        d.stop()
