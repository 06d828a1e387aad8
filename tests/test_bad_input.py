"""Bad input is refused where it enters, with a message naming the key and the fix (issue 10): booleans for
numbers, control characters in prompts, a recording folder that does not exist, and sources that fail or
give frames the pipeline cannot use."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from engine.errors import EngineConfigError
from engine.options import CacheOptions, EngineOptions
from vcam.config import ConfigError, ControlConfig, load_config
from vcam.control.routes import create_app
from vcam.control.server import start_api_server
from vcam.control.state import ControlError, ControlState
from vcam.prompt_text import PROMPT_PATTERN
from vcam.sources.video_file import VideoFileSource
from vcam.supervisor.capture import CaptureThread, frame_problem
from vcam.tools.cli import app as cli_app

REPO = Path(__file__).resolve().parents[1]


# ---- no bool for a number ------------------------------------------------------------------------------
@pytest.mark.parametrize("key,kind", [
    ("engine.steps", "an integer"), ("engine.seed", "an integer"), ("engine.width", "an integer"),
    ("source.fps", "a number"), ("source.seed", "an integer"), ("source.capture_width", "an integer"),
    ("source.dynamic_fraction", "a number"), ("output.fps", "a number"), ("output.stall_timeout_s", "a number"),
    ("control.port", "an integer"), ("control.max_prompt_length", "an integer"), ("obs.port", "an integer"),
    ("obs.reconnect_max_s", "a number"), ("cache.tau", "a number"), ("cache.refresh_period", "an integer"),
    ("interpolation.factor", "an integer"), ("interpolation.exp", "an integer"),
])
def test_a_boolean_is_not_a_number_in_the_config(key, kind):
    for value in (True, False):
        with pytest.raises(ConfigError) as e:
            load_config(overrides={key: value})
        assert len(e.value.lines) == 1
        assert f"{key} = {str(value).lower()}: expected {kind}, not true or false" in e.value.lines[0]


def test_a_boolean_is_not_a_number_in_a_preset():
    with pytest.raises(ConfigError, match=r"presets.0.seed = true: expected an integer"):
        load_config(overrides={"presets": [{"name": "a", "prompt": "b", "seed": True}]})


def test_numbers_and_real_booleans_still_load():
    cfg = load_config(overrides={"source.fps": 25, "output.fps": 60, "cache.enabled": False, "engine.compile": True,
                                 "cache.tau": 3})
    assert cfg.source.fps == 25.0 and cfg.output.fps == 60.0 and cfg.cache.tau == 3.0
    assert cfg.cache.enabled is False and cfg.engine.compile is True


def test_engine_options_refuse_a_boolean_for_a_number():
    with pytest.raises(EngineConfigError, match=r"tau = true: expected a number"):
        CacheOptions.parse({"tau": True})
    with pytest.raises(EngineConfigError, match=r"steps = true: expected an integer"):
        EngineOptions.check("steps", True)
    assert EngineOptions.parse(cache=False).cache.enabled is False  # the documented on/off switch stays


def test_live_settings_refuse_a_boolean_for_a_number():
    state = ControlState(load_config())
    v0 = state.settings.prompt_version
    with pytest.raises(ControlError, match=r"cache.tau = true: expected a number"):
        state.update(cache={"tau": True})
    with pytest.raises(ControlError, match=r"cache.halo = false: expected an integer"):
        state.update(cache={"halo": False})
    assert state.settings.prompt_version == v0 and state.settings.cache.tau == 4.0


def test_cli_refuses_a_boolean_for_a_number():
    r = subprocess.run([sys.executable, "-m", "vcam.tools.cli", "config", "show", "--set", "source.fps=true"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "--set source.fps=true: expected a number, not true or false" in r.stderr


# ---- control characters in prompts -----------------------------------------------------------------------
@pytest.mark.parametrize("prompt,code,position", [
    ("a cat\x00", "U+0000", 6), ("\x1b[2Jcleared", "U+001B", 1), ("bell\x07", "U+0007", 5),
    ("del\x7f", "U+007F", 4), ("csi \x9b31m", "U+009B", 5), ("next line\x85", "U+0085", 10),
])
def test_api_refuses_a_prompt_with_a_control_character(prompt, code, position):
    state = ControlState(load_config())
    http = TestClient(create_app(state, dict, None))
    before = state.settings
    r = http.put("/api/prompt", json={"prompt": prompt})
    assert r.status_code == 422, r.text
    assert f"prompt: contains control character {code} at position {position}; remove it" in r.json()["detail"]
    assert state.settings == before


def test_tabs_and_line_breaks_are_allowed_in_a_prompt():
    state = ControlState(load_config())
    http = TestClient(create_app(state, dict, None))
    r = http.put("/api/prompt", json={"prompt": "a foggy harbour,\n\tsoft light\r\n"})
    assert r.status_code == 200, r.text
    assert state.settings.prompt == "a foggy harbour,\n\tsoft light"
    assert load_config(overrides={"prompt.text": "two\nlines"}).prompt.text == "two\nlines"


def test_the_schema_states_the_prompt_rule():
    http = TestClient(create_app(ControlState(load_config()), dict, None))
    prompt = http.get("/openapi.json").json()["components"]["schemas"]["PromptRequest"]["properties"]["prompt"]
    assert prompt["pattern"] == PROMPT_PATTERN and "control" in prompt["description"]


def test_state_refuses_a_control_character_from_any_caller():
    # the OBS bridge calls set_prompt directly, without the API's request model
    state = ControlState(load_config())
    with pytest.raises(ControlError, match=r"prompt contains control character U\+001F at position 1"):
        state.set_prompt("\x1fhidden by strip()")


def test_config_refuses_control_characters_in_prompts_and_preset_names():
    with pytest.raises(ConfigError, match=r"prompt.text = 'x\\x00': contains control character U\+0000 at position 2"):
        load_config(overrides={"prompt.text": "x\x00"})
    with pytest.raises(ConfigError, match=r"presets.0.prompt = .*U\+001B at position 1; remove it"):
        load_config(overrides={"presets": [{"name": "a", "prompt": "\x1b[31mred"}]})
    with pytest.raises(ConfigError, match=r"presets.0.name = 'a\\tb': contains control character U\+0009"):
        load_config(overrides={"presets": [{"name": "a\tb", "prompt": "ok"}]})  # a name is one plain line


@pytest.mark.timeout(60)
def test_cli_prompt_with_a_control_character_is_refused(tmp_path):
    state = ControlState(load_config())
    server = start_api_server(ControlConfig(port=0, token_file=tmp_path / "absent"), state, dict)
    try:
        r = CliRunner().invoke(cli_app, ["prompt", "neon\x1b]0;title\x07", "--url", server.url])
    finally:
        server.stop()
    assert r.exit_code == 1 and "contains control character U+001B at position 5; remove it" in r.stderr
    assert "title" not in state.settings.prompt


# ---- recording path --------------------------------------------------------------------------------------
def test_record_path_in_a_missing_folder_is_a_config_error_and_nothing_is_created(tmp_path):
    folder = tmp_path / "no" / "such"
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"output.record_path": str(folder / "rec.mp4")})
    assert f"output.record_path = '{folder / 'rec.mp4'}': folder {folder} does not exist; create it first or " \
           f"choose another path" in e.value.lines[0]
    assert not (tmp_path / "no").exists()
    assert load_config(overrides={"output.record_path": str(tmp_path / "rec.mp4")}).output.record_path


# ---- failing sources -------------------------------------------------------------------------------------
class _Unreadable:
    """A cv2.VideoCapture double for a file OpenCV cannot open."""

    def __init__(self, path):
        pass

    def isOpened(self):
        return False

    def release(self):
        pass


def test_a_file_that_cannot_be_opened_is_retried_after_a_delay_not_on_every_read(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(b"not a video")
    opens = []
    src = VideoFileSource(path, capture_factory=lambda p: opens.append(p) or _Unreadable(p),
                          backoff_initial=60.0, backoff_max=60.0)
    assert all(src.read() is None for _ in range(100))
    assert len(opens) == 1 and "cannot decode" in src.status["error"] and not src.status["connected"]
    src._next_try = 0.0  # the delay is over
    assert src.read() is None and len(opens) == 2


_READ_BROKEN = """
import sys, time
from vcam.sources.video_file import VideoFileSource
src = VideoFileSource(sys.argv[1], backoff_initial=0.01, backoff_max=0.01)
end = time.monotonic() + 1.0
while time.monotonic() < end:
    assert src.read() is None
    time.sleep(0.005)
print("ERROR:", src.status["error"])
"""


def _broken_videos(folder: Path) -> list[Path]:
    noise = folder / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    good = folder / "good.mp4"
    writer = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), 10 * i, np.uint8))
    writer.release()
    cut = folder / "cut.mp4"
    data = good.read_bytes()
    cut.write_bytes(data[:len(data) // 2])  # the index (moov) is at the end: gone
    return [noise, cut]


@pytest.mark.timeout(120)
def test_a_corrupt_video_file_does_not_flood_the_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    for video in _broken_videos(tmp_path):
        # ~100 opens in a second: ffmpeg's own logging printed a line for each
        r = subprocess.run([sys.executable, "-c", _READ_BROKEN, str(video)], capture_output=True, text=True,
                           cwd=REPO, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"ERROR: cannot decode {video}; convert it to mp4 (H.264)"], r.stdout
        assert r.stderr == "", r.stderr


# ---- the capture thread checks every frame -----------------------------------------------------------------
class _Channel:
    def __init__(self, width=32, height=24):
        self.spec = SimpleNamespace(width=width, height=height)
        self.written: list[np.ndarray] = []

    def write(self, frame, meta):
        self.written.append(frame)


class _Bell:
    def ring(self):
        pass


class _Script:
    """A source that gives `bad` for the first `n` reads, then good frames; claims no error of its own."""

    def __init__(self, bad, n=100):
        self.bad, self.n, self.reads = bad, n, 0
        self.status = {"connected": True, "error": None}

    def read(self):
        self.reads += 1
        if self.reads <= self.n:
            return self.bad() if callable(self.bad) else self.bad
        return np.full((24, 32, 3), 9, np.uint8)

    def close(self):
        pass


def _capture(source, **kw):
    errors: list[str | None] = []
    cap = CaptureThread(source, _Channel(), _Bell(), fps=30, paced=True, on_error=errors.append, **kw)
    return cap, errors


@pytest.mark.parametrize("bad,text", [
    (np.zeros((240, 320, 3), np.float64),
     "source gave a float64 frame of shape (240, 320, 3); expected uint8 RGB (H, W, 3)"),
    (np.zeros((240, 320), np.uint8), "source gave a uint8 frame of shape (240, 320); expected uint8 RGB (H, W, 3)"),
    (np.zeros((240, 320, 4), np.uint8), "source gave a uint8 frame of shape (240, 320, 4); expected uint8 RGB"),
    (np.zeros((0, 320, 3), np.uint8), "source gave a uint8 frame of shape (0, 320, 3)"),
    ((True, "frame"), "source gave a tuple, not an image array"),
])
def test_frames_that_are_not_uint8_rgb_are_refused_counted_and_reported(bad, text):
    cap, errors = _capture(_Script(bad))
    published = [cap.step() for _ in range(110)]
    assert published == [False] * 100 + [True] * 10
    assert cap.refused == 100 and cap.frames == 10 and len(cap.channel.written) == 10
    assert len(errors) == 2 and errors[0].startswith(text) and errors[1] is None
    assert cap.status["error"] is None and cap.status["refused"] == 100


def test_frame_problem_accepts_a_good_frame():
    assert frame_problem(np.zeros((2, 3, 3), np.uint8)) is None


def test_no_frames_without_a_source_error_becomes_one():
    cap, errors = _capture(_Script(None, n=100))
    cap.step()
    assert errors == [] and cap.error is None  # one missing frame is no error yet
    cap._last_frame -= 5.0  # as if the source had said nothing for 5 s
    for _ in range(99):
        cap.step()
    assert errors == ["no frames from the source for 4 s"]  # in doublings of 1 s: one report, not one a second
    assert cap.status["error"] == errors[0] and cap.frames == 0 and cap.refused == 0
    assert cap.step() and errors[-1] is None and cap.frames == 1


def test_the_sources_own_error_is_the_reason():
    src = _Script(None, n=100)
    src.status["error"] = "cannot decode x.mp4; convert it to mp4 (H.264)"
    cap, errors = _capture(src)
    for _ in range(100):
        cap.step()
    assert errors == ["cannot decode x.mp4; convert it to mp4 (H.264)"] and cap.status["error"] == errors[0]
    src.status["error"] = None
    assert cap.step() and errors == ["cannot decode x.mp4; convert it to mp4 (H.264)", None]


def test_a_source_that_raises_does_not_stop_capture(caplog):
    def boom():
        raise RuntimeError("driver hiccup")

    cap, errors = _capture(_Script(boom))
    with caplog.at_level("WARNING", logger="vcam.supervisor.capture"):
        for _ in range(110):
            cap.step()
    assert errors == ["source read failed: RuntimeError: driver hiccup", None] and cap.frames == 10
    # logged once when it started, not once per read
    assert len([r for r in caplog.records if "driver hiccup" in r.getMessage()]) == 1


def test_a_lasting_source_error_is_logged_again_only_every_30_s(caplog):
    src = _Script(None, n=1000)
    src.status["error"] = "webcam 0 stopped delivering frames (unplugged?)"
    cap, errors = _capture(src)
    with caplog.at_level("WARNING", logger="vcam.supervisor.capture"):
        for _ in range(200):
            cap.step()
        assert len(caplog.records) == 1
        cap._logged_at -= 31.0  # as if 31 s had passed
        for _ in range(200):
            cap.step()
    assert [r.getMessage() for r in caplog.records] == [
        "source error: webcam 0 stopped delivering frames (unplugged?)",
        "source error (still): webcam 0 stopped delivering frames (unplugged?)"]
    assert errors == ["webcam 0 stopped delivering frames (unplugged?)"]  # the listener hears of changes only


@pytest.mark.timeout(60)
def test_the_running_thread_reports_and_recovers():
    src = _Script(np.zeros((24, 32, 3), np.float32), n=5)
    seen: list[str | None] = []
    done = threading.Event()

    def on_error(e):
        seen.append(e)
        if e is None:
            done.set()

    cap = CaptureThread(src, _Channel(), _Bell(), fps=200, paced=True, on_error=on_error)
    cap.start()
    try:
        assert done.wait(30), seen
    finally:
        cap.stop()
        cap.join(10)
    assert seen[0].startswith("source gave a float32 frame") and seen[-1] is None and cap.refused == 5
