"""`fluxrt-cam run` in a terminal and out of one: where to look first, start-up progress, the live line."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import cv2
import httpx
import pytest

from tests.daemon_helpers import BACKEND, wait_until
from vcam.config import load_config
from vcam.tools.cli import _JsonLogFormatter, _StartUp, _live_line

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[1]
CURSOR_HIDDEN = b"\x1b[?25l"  # what rich's live display (spinner, status line) writes first on a terminal
STREAM = re.compile(r"stream:\s+(http://\S+/stream\.mjpg)")
PAGE = re.compile(r"page:\s+(http://\S+/)\s")


class Daemon:
    """`fluxrt-cam run` of a cheap daemon (passthrough engine, small synthetic frames, the recording camera
    backend, a free port), with stdout a pipe or, with `tty`, a pseudo-terminal; its output collected."""

    def __init__(self, tmp_path: Path, *extra: str, tty: bool = False):
        env = {**os.environ, "FLUXRT_TEST_CAMERA_LOG": str(tmp_path / "camera.log"), "PYTHONPATH": str(REPO),
               "COLUMNS": "200", "TERM": "xterm-256color"}
        sets = ["engine.name=passthrough", "engine.width=128", "engine.height=96", "interpolation.method=none",
                "source.capture_width=320", "source.capture_height=240", f"output.camera_backend={BACKEND}",
                "output.virtual_camera=on", "control.port=0", "log_level=warning"]
        argv = [sys.executable, "-m", "vcam.tools.cli", "run", *(a for s in sets for a in ("--set", s)), *extra]
        self.out = bytearray()
        self._lock = threading.Lock()
        self.stderr = open(tmp_path / "stderr.log", "wb")  # children write there too: a file never fills up
        if tty:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                                         stderr=self.stderr)
            os.close(slave)
            read = lambda: os.read(master, 65536)  # noqa: E731
            self._close = lambda: os.close(master)
        else:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=self.stderr)
            read = lambda: self.proc.stdout.read1(65536)  # noqa: E731
            self._close = self.proc.stdout.close
        # read all along: a terminal or a pipe nobody reads blocks the writer once full
        self._reader = threading.Thread(target=self._read, args=(read,), daemon=True)
        self._reader.start()

    def _read(self, read) -> None:
        while True:
            try:
                chunk = read()
            except OSError:  # EIO: the terminal's last writer closed it
                return
            if not chunk:
                return
            with self._lock:
                self.out += chunk

    def text(self) -> str:
        with self._lock:
            return self.out.decode(errors="replace")

    def wait_for(self, pattern: re.Pattern | str, timeout: float = 90) -> re.Match:
        rx = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        try:
            return wait_until(lambda: rx.search(self.text()), timeout=timeout, every=0.1)
        except AssertionError:  # say what the daemon did say, on stdout and on stderr
            raise AssertionError(f"{rx.pattern!r} not printed within {timeout} s; stdout:\n{self.text()}\n"
                                 f"stderr:\n{self.errors()}") from None

    def stop(self) -> str:
        """Ctrl-C; the whole output once it has exited."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=30) == 0, self.errors()
        self._reader.join(10)
        return self.text()

    def errors(self) -> str:
        return Path(self.stderr.name).read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        self._close()
        self.stderr.close()


@pytest.fixture
def start(tmp_path):
    started: list[Daemon] = []

    def _start(*extra: str, tty: bool = False) -> Daemon:
        started.append(Daemon(tmp_path, *extra, tty=tty))
        return started[-1]

    yield _start
    for d in started:
        d.close()


def engine_running(url: str) -> bool:
    try:
        st = httpx.get(url.rsplit("/", 1)[0] + "/api/status", trust_env=False, timeout=5).json()["daemon"]
    except httpx.HTTPError:
        return False
    return st["inference"].get("phase") == "running" and bool(st["output"].get("last_frame"))


def test_run_prints_the_page_and_the_stream_first_and_the_stream_serves_jpeg(start):
    d = start()
    stream_url = d.wait_for(STREAM).group(1)
    page_url = d.wait_for(PAGE).group(1)
    assert "MJPEG: a browser, VLC, ffmpeg or an OBS media source" in d.text()
    page = httpx.get(page_url, trust_env=False, timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    with httpx.stream("GET", stream_url, trust_env=False, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/x-mixed-replace")
        got = b""
        for chunk in r.iter_bytes():
            got += chunk
            if re.search(rb"Content-Type: image/jpeg\r\n.*?\r\n\r\n\xff\xd8", got, re.S) or len(got) > 1 << 22:
                break
    assert re.search(rb"Content-Type: image/jpeg\r\n.*?\r\n\r\n\xff\xd8", got, re.S), got[:300]
    d.wait_for("  engine:         passthrough")
    out = d.stop()
    lines = out.splitlines()
    where = {key: next(i for i, line in enumerate(lines) if line.startswith(f"  {key}:")) for key in
             ("page", "stream", "engine")}
    assert where["page"] < where["stream"] < where["engine"]  # where to look comes before the engine's progress
    assert "  starting:       starting the inference process" in out  # progress as plain lines
    # not a terminal: plain lines only, no status line redrawn in place
    assert "\r" not in out and "\x1b" not in out and "| camera " not in out
    assert lines[-1] == "stopped."


@pytest.mark.skipif(shutil.which("ffmpeg") is None and not os.environ.get("CI"),
                    reason="ffmpeg is not installed (.ci/run installs it)")
def test_ffmpeg_decodes_the_stream_url_the_daemon_prints(start, tmp_path):
    d = start()
    url = d.wait_for(STREAM).group(1)
    wait_until(lambda: engine_running(url), timeout=90, every=0.2)
    r = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", url, "-frames:v", "3",
                        str(tmp_path / "frame%d.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    frame = cv2.imread(str(tmp_path / "frame3.png"))
    assert frame is not None and frame.shape == (96, 128, 3) and frame.std() > 0  # the engine-size picture


def test_run_on_a_terminal_shows_progress_then_a_live_status_line(start):
    d = start(tty=True)
    d.wait_for(STREAM)
    d.wait_for(re.compile(r"out [\d.]+ fps \| engine [\d.]+ fps \| p50 [\d-]+ (ms )?\| active - \| camera \S+ \| "
                          r"OBS off \| 'a watercolor painting"))
    out = d.stop()
    assert CURSOR_HIDDEN.decode() in out and "engine:         passthrough" in out
    assert "stopped." in out


def test_quiet_prints_where_to_look_and_no_progress_or_live_line(start):
    d = start("--quiet", tty=True)
    stream_url = d.wait_for(STREAM).group(1)
    d.wait_for("Ctrl-C stops")
    wait_until(lambda: engine_running(stream_url), timeout=90, every=0.2)
    time.sleep(1.5)  # a few refreshes of the live line, were it shown
    out = d.stop()
    assert CURSOR_HIDDEN.decode() not in out and "| camera " not in out and "starting:" not in out
    assert "stopped." in out


def test_live_line_has_the_figures_and_the_states():
    st = {"settings": {"prompt": "neon [city]", "mode": "live"},
          "inference": {"alive": True, "phase": "running", "engine_fps": 2.5, "cache": {"active_fraction": 0.125}},
          "output": {"interval_mean_ms": 33.3, "latency_p50_ms": 41.2,
                     "sinks": {"virtual_camera": {"active": True, "device": "/dev/video10"}}},
          "obs": {"enabled": True, "connected": True, "scene": "Gaming"}}
    assert _live_line(st) == ("out 30.0 fps | engine 2.5 fps | p50 41 ms | active 12% | camera /dev/video10 | "
                              "OBS connected (Gaming) | 'neon [city]'")
    st["inference"] = {"alive": True, "phase": "loading weights"}
    st["output"] = {}
    st["settings"]["mode"] = "paused"
    st["obs"] = {"enabled": False}
    assert _live_line(st) == ("out - fps | engine: loading weights | p50 - | active - | camera - | OBS off | paused | "
                              "'neon [city]'")


def test_start_up_news_as_plain_lines_and_on_a_terminal():
    cfg = load_config()
    status = lambda phase, cam=None: {  # noqa: E731
        "inference": {"alive": True, **({"phase": phase} if phase else {})}, "source": {"error": None},
        "output": {"sinks": {"virtual_camera": cam}} if cam else {}}
    plain = _StartUp(cfg, live=False)
    assert plain.news(status(None)) == ["  starting:       starting the inference process"]
    assert plain.news(status(None)) == []  # only what changed
    assert plain.news(status("loading weights", {"active": True, "device": "/dev/video10"})) == [
        "  virtual camera: 'FluxRT Camera' on /dev/video10 - pick it in Zoom/Meet/OBS",
        "  starting:       loading weights"]
    assert plain.news(status("running")) == [] and plain.phase == "running"
    tty = _StartUp(cfg, live=True)  # the spinner shows the phase; what stays is each finished one
    assert tty.news(status("loading weights")) == [] and re.fullmatch(r"loading weights  \d+ s", tty.spinner_text())
    done = tty.news(status("running"))
    assert len(done) == 1 and re.fullmatch(r"  done:           loading weights, [\d.]+ s", done[0])


def test_the_engine_names_its_slow_stages_for_the_progress(tmp_path, torch_one_thread):
    from engine import create_engine

    phases: list[str] = []
    folder = tmp_path / "tiny"
    create_engine("flux2-tiny", tiny_preset="test", tiny_dir=folder, width=32, height=32, steps=1, device="cpu",
                  on_phase=phases.append)
    assert phases == ["building the tiny model", "loading weights", "setting up on cpu"]
    phases.clear()
    create_engine("flux2-tiny", tiny_preset="test", tiny_dir=folder, width=32, height=32, steps=1, device="cpu",
                  on_phase=phases.append)
    assert phases == ["loading weights", "setting up on cpu"]  # built once: no build the second time


def test_log_json_lines():
    import json
    import logging

    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.LogRecord("vcam.x", logging.ERROR, __file__, 1, "edit %s failed", ("7",), sys.exc_info())
    entry = json.loads(_JsonLogFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "vcam.x" and entry["message"] == "edit 7 failed"
    assert "ValueError: bad frame" in entry["exception"] and isinstance(entry["ts"], float)
