"""`fluxrt-cam obs-setup` against real OBS Studio 29 (Xvfb, obs-websocket with auth on): the Media Source
plays the daemon's stream URL in the current scene, sized to the canvas; a second run leaves one item and
updates the settings; --scene and the prompt text source; a real MJPEG stream actually plays; the token
reaches OBS but not the terminal; OBS not running, a wrong password and an unknown scene are one line each."""
from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from obsws_python.error import OBSSDKRequestError
from typer.testing import CliRunner

from obs_harness import OBS_PASSWORD, Rig, free_port, rig, wait_for, xvfb  # noqa: F401 - rig, xvfb: fixtures
from vcam.config import load_config
from vcam.control.stream import BOUNDARY, multipart_part
from vcam.obs.setup import CAMERA_SOURCE, ObsSetupError, stream_url
from vcam.tools.cli import app

pytestmark = [pytest.mark.obs, pytest.mark.timeout(120)]
runner = CliRunner()


def obs_setup(rig: Rig, *args: str, password: str = OBS_PASSWORD, port: int | None = None):
    sets = [f"obs.port={port or rig.obs.port}", f"obs.password={password}"]
    return runner.invoke(app, ["obs-setup", *[a for s in sets for a in ("--set", s)], *args])


def items(rig: Rig, scene: str) -> list[dict]:
    with rig.obs.client() as c:
        return c.send("GetSceneItemList", {"sceneName": scene}, raw=True)["sceneItems"]


def named(rig: Rig, scene: str, name: str) -> list[dict]:
    return [i for i in items(rig, scene) if i["sourceName"] == name]


def settings(rig: Rig, name: str) -> dict:
    with rig.obs.client() as c:
        return c.send("GetInputSettings", {"inputName": name}, raw=True)


def test_adds_the_stream_to_the_current_scene_once(rig):
    with rig.obs.client() as c:
        c.send("SetCurrentProgramScene", {"sceneName": "Scene A"})
        canvas = c.send("GetVideoSettings", raw=True)
    r = obs_setup(rig, "--set", "control.port=8801")
    assert r.exit_code == 0, r.output
    assert "'Scene A'" in r.output and "http://127.0.0.1:8801/stream.mjpg" in r.output
    [item] = named(rig, "Scene A", CAMERA_SOURCE)
    assert item["inputKind"] == "ffmpeg_source"
    got = settings(rig, CAMERA_SOURCE)["inputSettings"]
    assert got["input"] == "http://127.0.0.1:8801/stream.mjpg"
    assert got["is_local_file"] is False and got["restart_on_activate"] is True
    t = item["sceneItemTransform"]
    assert (t["boundsType"], t["boundsWidth"], t["boundsHeight"]) == (
        "OBS_BOUNDS_SCALE_INNER", canvas["baseWidth"], canvas["baseHeight"])
    assert (t["positionX"], t["positionY"]) == (0, 0)

    # again, with another port: the same single item, its URL updated
    r = obs_setup(rig, "--set", "control.port=8802")
    assert r.exit_code == 0, r.output
    assert "updated" in r.output
    assert len(named(rig, "Scene A", CAMERA_SOURCE)) == 1
    assert settings(rig, CAMERA_SOURCE)["inputSettings"]["input"] == "http://127.0.0.1:8802/stream.mjpg"


def test_named_scene_and_prompt_text_source(rig):
    text = f"FluxRT Prompt {time.monotonic_ns()}"
    for _ in range(2):
        r = obs_setup(rig, "--scene", "Scene C", "--set", f"obs.prompt_text_source={text}",
                      "--set", "obs.enabled=true")
        assert r.exit_code == 0, r.output
        assert f"text source {text!r}" in r.output
    assert len(named(rig, "Scene C", CAMERA_SOURCE)) == 1
    [text_item] = named(rig, "Scene C", text)
    assert text_item["inputKind"].startswith("text_ft2_source")  # what the bridge drives on Linux
    [cam_item] = named(rig, "Scene C", CAMERA_SOURCE)
    assert text_item["sceneItemIndex"] > cam_item["sceneItemIndex"]  # the prompt shows above the picture
    assert settings(rig, text)["inputSettings"]["text"] == load_config().prompt.text


class _Mjpeg(BaseHTTPRequestHandler):
    """The daemon's stream format (vcam.control.stream): a red picture, 15 times a second."""
    jpeg = cv2.imencode(".jpg", np.full((96, 128, 3), (0, 0, 255), np.uint8))[1].tobytes()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.end_headers()
        try:
            while not self.server.stopping.is_set():  # type: ignore[attr-defined]
                self.wfile.write(multipart_part(self.jpeg))
                self.wfile.flush()
                time.sleep(1 / 15)
        except OSError:
            pass  # OBS went away

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mjpeg() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Mjpeg)
    server.stopping = threading.Event()  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.stopping.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_obs_plays_the_stream(rig, mjpeg):
    with rig.obs.client() as c:
        c.send("SetCurrentProgramScene", {"sceneName": "Scene B"})  # shown: OBS opens the stream only then
    r = obs_setup(rig, "--set", f"control.port={mjpeg}")
    assert r.exit_code == 0, r.output
    assert "'Scene B'" in r.output
    with rig.obs.client() as c:
        wait_for(lambda: c.send("GetMediaInputStatus", {"inputName": CAMERA_SOURCE}, raw=True)["mediaState"]
                 == "OBS_MEDIA_STATE_PLAYING", 20, interval=0.2, what="OBS to play the MJPEG stream")

        def red() -> bool:
            try:
                shot = c.send("GetSourceScreenshot", {"sourceName": CAMERA_SOURCE, "imageFormat": "png",
                                                      "imageWidth": 32}, raw=True)["imageData"]
            except OBSSDKRequestError:
                return False  # "Failed to render screenshot" until the first picture is decoded
            png = base64.b64decode(shot.split(",", 1)[1])
            b, g, r_ = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).reshape(-1, 3).mean(0)
            return r_ > 200 and g < 60 and b < 60
        wait_for(red, 20, interval=0.2, what="the stream's red picture in OBS")


def test_token_reaches_obs_but_not_the_terminal(rig, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert runner.invoke(app, ["token"]).exit_code == 0
    token = (tmp_path / "fluxrt" / "token").read_text().strip()
    r = obs_setup(rig, "--scene", "Scene A", "--set", "control.host=0.0.0.0", "--set", "control.port=8803")
    assert r.exit_code == 0, r.output
    assert token not in r.output and "token=********" in r.output
    assert settings(rig, CAMERA_SOURCE)["inputSettings"]["input"] == f"http://127.0.0.1:8803/stream.mjpg?token={token}"


def test_missing_token_and_port_zero_are_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(ObsSetupError, match="fluxrt-cam token"):
        stream_url(load_config(None, {"control.host": "0.0.0.0"}).control)
    with pytest.raises(ObsSetupError, match="set control.port"):
        stream_url(load_config(None, {"control.port": 0}).control)


def one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_wrong_password_is_one_line(rig):
    wrong = "wrong-pw-Kd2-never-print-me"
    r = obs_setup(rig, password=wrong)
    assert r.exit_code == 1
    line = one_error_line(r.output)
    assert "rejected obs.password" in line and "Show Connect Info" in line
    assert wrong not in r.output and OBS_PASSWORD not in r.output


def test_obs_not_running_is_one_line(rig):
    r = obs_setup(rig, port=free_port())  # nothing listens there
    assert r.exit_code == 1
    line = one_error_line(r.output)
    assert "not reachable" in line and "start OBS" in line


def test_unknown_scene_is_one_line(rig):
    r = obs_setup(rig, "--scene", "No Such Scene")
    assert r.exit_code == 1
    line = one_error_line(r.output)
    assert "'No Such Scene'" in line and "'Scene A'" in line and "--scene" in line
    assert named(rig, "Scene A", "No Such Scene") == []


def test_a_source_of_another_kind_is_left_alone(rig):
    name = f"Not A Text {time.monotonic_ns()}"
    with rig.obs.client() as c:
        c.send("CreateInput", {"sceneName": "Scene A", "inputName": name, "inputKind": "color_source_v3",
                               "inputSettings": {}, "sceneItemEnabled": True})
    r = obs_setup(rig, "--set", f"obs.prompt_text_source={name}")
    assert r.exit_code == 1
    line = one_error_line(r.output)
    assert f"{name!r} of kind color_source" in line and "rename or delete" in line
    assert settings(rig, name)["inputKind"].startswith("color_source")
