"""obs_scripts/fluxrt_presets.py inside real OBS 29: loaded through the scene collection, its frontend
hotkeys fired with obs-websocket's TriggerHotkeyByName, talking to the control API with the token."""
from __future__ import annotations

import importlib.util
import json
import time

import pytest

from obs_harness import API_TOKEN, OBS_PASSWORD, Rig, rig, wait_for, xvfb  # noqa: F401 - rig, xvfb: fixtures

pytestmark = [pytest.mark.obs, pytest.mark.timeout(120)]


def press(rig: Rig, name: str) -> None:
    with rig.obs.client() as c:
        c.send("TriggerHotkeyByName", {"hotkeyName": name})


def test_script_registers_slot_and_step_hotkeys(rig):
    with rig.obs.client() as c:
        names = c.send("GetHotkeyList", raw=True)["hotkeys"]
    ours = [n for n in names if n.startswith("fluxrt.")]
    assert ours == [f"fluxrt.preset.{i}" for i in range(1, 10)] + ["fluxrt.next", "fluxrt.prev"]
    log = rig.obs.log_text()
    assert "Loaded python script: fluxrt_presets.py" in log
    # on load the script fetched the presets (with the token) and logged the slot map
    wait_for(lambda: "preset slots 1=watercolor, 2=anime, 3=cyberpunk, 4=oil" in rig.obs.log_text(), 10,
             what="the script's preset listing in the OBS log")


def test_hotkey_applies_that_preset(rig):
    rig.state.set_prompt("hotkey test start")
    for slot, name in ((3, "cyberpunk"), (2, "anime"), (4, "oil")):
        v0 = rig.state.settings.prompt_version
        press(rig, f"fluxrt.preset.{slot}")
        wait_for(lambda n=name: rig.state.settings.preset == n, 10, what=f"hotkey slot {slot} -> preset {name}")
        assert rig.state.settings.prompt == rig.state.presets[slot - 1].prompt
        assert rig.state.settings.prompt_version == v0 + 1  # one press = one change (release does nothing)


def test_next_and_previous_hotkeys(rig):
    rig.state.set_prompt("hotkey test start")
    press(rig, "fluxrt.preset.1")
    wait_for(lambda: rig.state.settings.preset == "watercolor", 10, what="slot 1")
    press(rig, "fluxrt.next")
    wait_for(lambda: rig.state.settings.preset == "anime", 10, what="next")
    press(rig, "fluxrt.prev")
    press(rig, "fluxrt.prev")
    wait_for(lambda: rig.state.settings.preset == "oil", 10, what="prev twice wraps to the last preset")
    assert rig.state.settings.prompt == rig.state.presets[-1].prompt


def test_empty_slot_and_missing_daemon_are_logged_warnings(rig):
    v0 = rig.state.settings.prompt_version
    press(rig, "fluxrt.preset.9")  # only 4 presets configured
    wait_for(lambda: "preset slot 9 refused: preset 9 out of range: there are 4 presets, 1-4" in rig.obs.log_text(), 10,
             what="the empty-slot warning")
    assert rig.state.settings.prompt_version == v0
    rig.state.set_prompt("missing daemon test start")
    rig.stop_api()
    try:
        press(rig, "fluxrt.preset.2")
        wait_for(lambda: f"no daemon at {rig.api.url}" in rig.obs.log_text(), 10, what="the missing-daemon warning")
        with rig.obs.client() as c:  # OBS did not block on it
            assert c.send("GetVersion", raw=True)["obsVersion"].startswith("29.")
    finally:
        rig.start_api()
    press(rig, "fluxrt.preset.2")
    wait_for(lambda: rig.state.settings.preset == "anime", 10, what="the hotkey to work again with the daemon back")
    wait_for(lambda: "is back" in rig.obs.log_text(), 5, what="the daemon-is-back note")
    log = rig.obs.log_text()
    assert API_TOKEN not in log and OBS_PASSWORD not in log


def test_bound_key_on_the_display_fires_once_and_bindings_persist(rig):
    """A real ctrl+alt+2 on the X display (XTest) -> OBS's hotkey system -> the binding the script restored
    with obs_hotkey_load -> one change (the release does nothing). Then OBS saves the collection and the
    script's obs_hotkey_save writes the binding back."""
    if importlib.util.find_spec("Xlib") is None:
        pytest.skip("python-xlib is not installed (the test extra brings it): it presses the keys on Xvfb")
    from Xlib import XK, X, display
    from Xlib.ext import xtest

    rig.state.set_prompt("key press test start")
    v0 = rig.state.settings.prompt_version
    x = display.Display(rig.display)
    try:
        def key(name: str, down: bool) -> None:
            xtest.fake_input(x, X.KeyPress if down else X.KeyRelease, x.keysym_to_keycode(XK.string_to_keysym(name)))
            x.sync()
        for name in ("Control_L", "Alt_L", "2"):
            key(name, True)
        time.sleep(0.15)  # OBS polls the key state
        for name in ("2", "Alt_L", "Control_L"):
            key(name, False)
    finally:
        x.close()
    wait_for(lambda: rig.state.settings.preset == "anime", 10, what="ctrl+alt+2 -> preset slot 2")
    time.sleep(0.5)
    assert rig.state.settings.prompt_version == v0 + 1, "press and release must make exactly one change"

    with rig.obs.client() as c:  # any structural change makes OBS save the scene collection
        c.send("CreateScene", {"sceneName": f"Saved {time.monotonic_ns()}"})
    collection = rig.obs.home / ".config/obs-studio/basic/scenes/Untitled.json"

    def saved() -> dict:
        scripts = json.loads(collection.read_text())["modules"]["scripts-tool"]
        return scripts[0]["settings"] if scripts else {}
    wait_for(lambda: "fluxrt.preset.9" in saved(), 10, what="script_save to write every slot's binding")
    settings = saved()
    assert settings["fluxrt.preset.2"] == [{"alt": True, "control": True, "key": "OBS_KEY_2"}]
    assert settings["fluxrt.preset.1"] == [] and settings["fluxrt.next"] == []
