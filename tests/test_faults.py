"""Fault injection on the real daemon (processes, shared memory, the recording camera backend): kill -9 and
SIGSTOP of each child, a source that returns garbage, every daemon process killed at once, a hung child
whose supervisor dies, a second daemon. The camera must get a frame in every slot, the daemon must
recover and leave nothing in /dev/shm.

Timing: the camera runs at 10 fps in these tests and the bound is relative to that (p99 interval < 2x
nominal), so the check is about continuity, not about how fast a shared 2-core machine schedules.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.camera_backend import read_log
from tests.daemon_helpers import daemon_config, semaphore_names, shm_names, wait_until
from vcam.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
FPS = 10.0
SLOW_CAMERA = {"output.fps": FPS, "source.fps": FPS}


@pytest.fixture
def camera_log(tmp_path):
    return tmp_path / "camera.log"


def camera_intervals_outside(camera_log: Path, t0: float, t1: float,
                             windows: list[tuple[float, float]]) -> np.ndarray:
    """Seconds between consecutive camera frames in [t0, t1], leaving out intervals that touch a window."""
    ts = np.array([r[0] for r in read_log(camera_log) if t0 <= r[0] <= t1])
    assert ts.size > 10, f"the camera got {ts.size} frames"
    iv = np.diff(ts)
    keep = np.ones(iv.size, bool)
    for a, b in windows:
        keep &= (ts[1:] < a) | (ts[:-1] > b)
    return iv[keep]


def assert_every_slot_filled(camera_log: Path, t0: float, t1: float, windows: list[tuple[float, float]]) -> None:
    iv = camera_intervals_outside(camera_log, t0, t1, windows)
    p99 = float(np.percentile(iv, 99))
    assert p99 < 2.0 / FPS, f"camera interval p99 {p99 * 1000:.0f} ms (nominal {1000 / FPS:.0f} ms)"


def child(d: Daemon, role: str) -> dict:
    return d.status()[role]


def ready(d: Daemon, role: str) -> int | None:
    """The role's PID once it runs (and, for the output, once its standby waits), else None."""
    c = child(d, role)
    if not (c["alive"] and c["heartbeat_phase"] == "running"):
        return None
    if role == "output" and (c["standby"]["phase"] != "standby" or not c.get("sinks")):
        return None
    return c["pid"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["inference", "output"])
def test_ten_kill_9_in_a_row_of_each_child(camera_log, role):
    d = Daemon(daemon_config(camera_log, **SLOW_CAMERA))
    d.start()
    try:
        wait_until(lambda: child(d, "output").get("new", 0) > 10, timeout=60)
        t0, windows = time.monotonic(), []
        for n in range(1, 11):
            pid = wait_until(lambda: ready(d, role), timeout=60)
            t = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            windows.append((t, t + 1.0))
            wait_until(lambda: child(d, role)["restarts"] == n, timeout=60)
        wait_until(lambda: ready(d, role), timeout=60)
        frames = child(d, "output")["new"]
        wait_until(lambda: child(d, "output")["new"] > frames + 10, timeout=30)  # recovered: new frames again
        t1 = time.monotonic()
        assert_every_slot_filled(camera_log, t0, t1, windows)
        assert "killed by signal 9" in child(d, role)["last_error"]
    finally:
        d.stop()
    assert not shm_names()


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("role", ["inference", "output"])
def test_a_stopped_child_is_killed_after_the_watchdog_timeout_and_replaced(camera_log, role):
    d = Daemon(daemon_config(camera_log, **SLOW_CAMERA))
    timeout_s = d.cfg.watchdog.timeout_s
    d.start()
    try:
        pid = wait_until(lambda: ready(d, role), timeout=60)
        wait_until(lambda: child(d, "output").get("new", 0) > 10, timeout=60)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)  # hung: alive to is_alive(), silent to the heartbeat
        time.sleep(5.0)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        wait_until(lambda: child(d, role)["restarts"] == 1 and ready(d, role), timeout=60)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert "no heartbeat" in child(d, role)["last_error"]
        frames = child(d, "output")["new"]
        wait_until(lambda: child(d, "output")["new"] > frames + 10, timeout=30)
        # the camera is frozen only while the output process is stopped and not yet found out
        window = [(t0, t0 + timeout_s + 1.0)] if role == "output" else []
        assert_every_slot_filled(camera_log, t0 - 1.0, time.monotonic(), window)
    finally:
        d.stop()
    assert not shm_names()


class FaultySource:
    """100 reads each of: None, a wrong shape, a wrong dtype; then good frames."""

    def __init__(self) -> None:
        self.i = 0
        self.status: dict = {"connected": True, "error": None}

    def read(self):
        self.i += 1
        if self.i <= 100:
            return None
        if self.i <= 200:
            return np.zeros((240, 320), np.uint8)
        if self.i <= 300:
            return np.zeros((240, 320, 3), np.float64)
        return np.full((240, 320, 3), 120 + (self.i % 50), np.uint8)

    def close(self) -> None:
        pass


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_source_that_returns_garbage_shows_why_and_the_camera_keeps_its_fps(camera_log, monkeypatch):
    source = FaultySource()
    monkeypatch.setattr("vcam.daemon.open_source", lambda cfg: source)
    d = Daemon(daemon_config(camera_log, **{**SLOW_CAMERA, "source.fps": 30.0}))
    d.start()
    try:
        t0 = time.monotonic()
        cards = set()

        def card_seen() -> bool:
            card = child(d, "output").get("card")
            if card:
                cards.add(card)
            return any("float64" in c for c in cards)

        wait_until(card_seen, timeout=60, every=0.1)
        assert any("source error" in c for c in cards), cards
        wait_until(lambda: source.i > 300 and child(d, "output").get("showing") == "frames", timeout=60)
        frames = child(d, "output")["new"]
        wait_until(lambda: child(d, "output")["new"] > frames + 10, timeout=30)
        assert d.status()["source"]["refused"] == 200
        assert d.status()["source"]["error"] is None
        assert_every_slot_filled(camera_log, t0, time.monotonic(), [])
    finally:
        d.stop()
    assert not shm_names()


# ---- whole-daemon faults: the CLI daemon in its own process ----------------------------------------
def run_cli(camera_log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "FLUXRT_TEST_CAMERA_LOG": str(camera_log), "PYTHONPATH": str(REPO)}
    sets = ["engine.name=passthrough", "engine.width=128", "engine.height=96", "interpolation.method=none",
            f"output.camera_backend={daemon_config(camera_log).output.camera_backend}", "output.virtual_camera=on",
            "control.port=0", *extra]
    return subprocess.Popen([sys.executable, "-m", "vcam.tools.cli", "run", *[a for s in sets for a in ("--set", s)]],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def daemon_processes(pid: int) -> list[psutil.Process]:
    """The supervisor and everything it started (children, standby, multiprocessing's resource tracker)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def wait_for_camera(camera_log: Path, p: subprocess.Popen) -> None:
    def flowing() -> bool:
        assert p.poll() is None, p.stderr.read() if p.stderr else ""
        return camera_log.exists() and len(read_log(camera_log)) > 10

    wait_until(flowing, timeout=90)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_segments_of_a_daemon_killed_whole_are_removed_at_the_next_start(camera_log, caplog):
    p = run_cli(camera_log)
    try:
        wait_for_camera(camera_log, p)
        procs = daemon_processes(p.pid)
        assert len(procs) >= 4  # supervisor, inference, output, standby (and the resource tracker)
        for proc in procs:  # every process at once: nobody is left to clean up
            proc.kill()
        psutil.wait_procs(procs, timeout=10)
        assert shm_names(p.pid)  # leaked, as the issue saw
        assert semaphore_names(p.pid)  # and multiprocessing's named semaphores (queues, doorbells)
    finally:
        if p.poll() is None:
            p.kill()
    caplog.set_level(logging.WARNING, logger="vcam.supervisor.supervisor")
    d = Daemon(daemon_config(camera_log))
    d.start()
    d.stop()
    assert not shm_names(p.pid) and not semaphore_names(p.pid)
    said = [r.getMessage() for r in caplog.records if "left behind" in r.getMessage()]
    assert said and str(p.pid) in said[0], said


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_hung_child_dies_with_its_supervisor(camera_log):
    p = run_cli(camera_log, "watchdog.timeout_s=600")  # the watchdog must not be what ends the child
    try:
        wait_for_camera(camera_log, p)
        procs = daemon_processes(p.pid)
        workers = [q for q in procs[1:] if "child_main" in " ".join(q.cmdline()) or "spawn_main" in " ".join(q.cmdline())]
        assert len(workers) >= 3, [q.cmdline() for q in procs]
        for q in workers:
            q.suspend()  # SIGSTOP: hung, cannot notice anything itself
        procs[0].kill()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, alive
        wait_until(lambda: not shm_names(p.pid), timeout=30)  # the resource tracker unlinked the segments
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_second_daemon_refuses_at_once_naming_the_first(camera_log):
    first = run_cli(camera_log)
    try:
        wait_for_camera(camera_log, first)
        t0 = time.monotonic()
        second = run_cli(camera_log.with_name("second.log"))
        out, err = second.communicate(timeout=60)
        elapsed = time.monotonic() - t0
        assert second.returncode == 1, (out, err)
        assert f"another FluxRT Camera daemon is running (PID {first.pid}, control http://127.0.0.1:" in err, err
        assert not shm_names(second.pid)  # refused before creating anything
        # the issue measured 13 s (a full start-up, then the port clash); the lock answers before any import
        # of torch. Generous here (a busy machine); `fluxrt-cam run` measures ~1 s on an idle one
        assert elapsed < 10, elapsed
        assert first.poll() is None  # the first daemon is untouched
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(timeout=30)
        except subprocess.TimeoutExpired:
            first.kill()
