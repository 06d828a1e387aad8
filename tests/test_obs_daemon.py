"""End to end: the real daemon (passthrough engine, synthetic source, the recording pyvirtualcam backend,
control API on port 0, OBS bridge on) with real OBS 29 running the presets script.

A preset hotkey in OBS -> the script -> the control API -> the daemon's prompt, and the camera then gets
frames made with the new prompt_version; a program scene switch -> the mapped preset; OBS killed and
restarted -> the bridge reconnects, scenes work again, and the camera never stops receiving frames."""
from __future__ import annotations

import time

import pytest

from daemon_helpers import daemon_config
from obs_harness import OBS_PASSWORD, Obs, free_port, need_binaries, wait_for, xvfb  # noqa: F401 - xvfb: fixture
from tests.camera_backend import read_log
from vcam.control.client import DaemonClient
from vcam.daemon import Daemon

pytestmark = [pytest.mark.obs, pytest.mark.timeout(180)]


def test_obs_hotkey_and_scene_drive_the_daemon_and_survive_an_obs_restart(xvfb, tmp_path):  # noqa: F811
    need_binaries("obs")
    camera_log = tmp_path / "camera.log"
    obs_port = free_port()
    cfg = daemon_config(camera_log, **{
        "control.enabled": True, "control.port": 0, "output.preview": False,
        "obs.enabled": True, "obs.port": obs_port, "obs.password": OBS_PASSWORD, "obs.reconnect_max_s": 1.0,
        "scenes": {"Scene B": "oil"},
    })
    daemon = Daemon(cfg)
    daemon.start()
    obs = None
    try:
        client = DaemonClient(daemon.api.url)
        st = lambda: client.status()["daemon"]  # noqa: E731
        wait_for(lambda: st()["output"].get("last_frame"), 20, what="the daemon's first frame")
        assert not st()["obs"]["connected"]  # OBS is not there yet: the daemon runs regardless
        # OBS after the daemon: its script must know the daemon's URL, which port 0 picked
        obs = Obs(xvfb.display, password=OBS_PASSWORD, port=obs_port, script_settings={"url": daemon.api.url})
        obs.start()
        wait_for(lambda: st()["obs"]["connected"], 15, what="the daemon's bridge to connect to OBS")

        # hotkey: slot 3 = the third preset
        with obs.client() as c:
            c.send("TriggerHotkeyByName", {"hotkeyName": "fluxrt.preset.3"})
        s = wait_for(lambda: (x := st())["settings"]["preset"] == "cyberpunk" and x, 10, what="hotkey -> preset")
        assert s["settings"]["prompt"] == "cyberpunk city at night, neon lights, rain"
        version = s["settings"]["prompt_version"]
        wait_for(lambda: st()["output"]["last_frame"]["prompt_version"] >= version, 10,
                 what="a published frame made with the new prompt_version")

        def scene_drives_the_look() -> None:
            client.set_prompt("before the scene switch")
            with obs.client() as c:
                c.send("SetCurrentProgramScene", {"sceneName": "Scene A"})
                c.send("SetCurrentProgramScene", {"sceneName": "Scene B"})
            s = wait_for(lambda: (x := st())["settings"]["preset"] == "oil" and x, 10, what="Scene B -> preset oil")
            wait_for(lambda: st()["output"]["last_frame"]["prompt_version"] >= s["settings"]["prompt_version"], 10,
                     what="a frame with the scene's prompt_version")

        scene_drives_the_look()

        # OBS dies (SIGKILL) and comes back; frames keep flowing throughout
        t_kill = time.monotonic()
        obs.kill()
        wait_for(lambda: not st()["obs"]["connected"], 10, what="the bridge to notice OBS died")
        time.sleep(1.0)  # a stretch with no OBS at all
        obs.start()
        wait_for(lambda: st()["obs"]["connected"], 15, what="the bridge to reconnect")
        assert st()["obs"]["reconnects"] >= 1
        scene_drives_the_look()
        t_end = time.monotonic()
        frames = [r[0] for r in read_log(camera_log) if t_kill - 0.5 <= r[0] <= t_end]
        gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
        assert len(frames) > 10 and max(gaps) < 1.0, f"camera gap {max(gaps):.2f} s over {len(frames)} frames"
        assert st()["output"]["restarts"] == 0 and st()["inference"]["restarts"] == 0
    finally:
        if obs is not None:
            obs.close()
        daemon.stop()
