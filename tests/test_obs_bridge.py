"""OBS bridge against real OBS Studio 29 (Xvfb, obs-websocket with auth on): scene -> preset, CustomEvent
-> prompt/preset, text source, wrong password, password never logged, OBS killed and restarted, one log
line per connection state change (not per retry), last_error cleared once connected."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from obs_harness import (OBS_PASSWORD, Obs, Rig, free_port, need_binaries, rig,  # noqa: F401 - rig, xvfb: fixtures
                         wait_for, xvfb)
from vcam.config import ObsConfig, load_config
from vcam.control.state import ControlState
from vcam.obs.bridge import ObsBridge

pytestmark = [pytest.mark.obs, pytest.mark.timeout(120)]
SCENES = {"Scene B": "anime", "Scene C": "oil"}


@pytest.fixture
def bridge(rig: Rig) -> Iterator[ObsBridge]:
    b = ObsBridge(rig.obs_cfg(), SCENES, rig.state).start()
    wait_for(lambda: b.status()["connected"], 15, what="the bridge to connect to OBS")
    yield b
    b.stop()


def switch(rig: Rig, scene: str) -> None:
    with rig.obs.client() as c:
        c.send("SetCurrentProgramScene", {"sceneName": scene})


def broadcast(rig: Rig, data: dict) -> None:
    """From a second obs-websocket client, as Stream Deck or Streamer.bot would."""
    with rig.obs.client() as c:
        c.send("BroadcastCustomEvent", {"eventData": data})


def shown(records: list[logging.LogRecord]) -> list[str]:
    """What a user running at the default INFO level sees: one string per line, with any traceback."""
    return [f"{r.levelname} {r.name}: {r.getMessage()}" + (" Traceback" if r.exc_info or r.exc_text else "")
            for r in records if r.levelno >= logging.INFO]


def bridge_lines(records: list[logging.LogRecord]) -> list[str]:
    return [line for line in shown(records) if " vcam.obs.bridge: " in line]


def scene_test(rig: Rig, bridge: ObsBridge) -> None:
    switch(rig, "Scene A")  # unmapped: a known starting point
    wait_for(lambda: bridge.status()["scene"] == "Scene A", 5, what="Scene A")
    rig.state.set_prompt("scene test start")  # no preset: each mapped scene must change it
    for scene, preset in (("Scene B", "anime"), ("Scene C", "oil")):
        v0 = rig.state.settings.prompt_version
        switch(rig, scene)
        wait_for(lambda p=preset: rig.state.settings.preset == p, 5, what=f"{scene} to apply preset {preset}")
        assert rig.state.settings.prompt_version > v0
        assert rig.state.settings.prompt == next(p.prompt for p in rig.state.presets if p.name == preset)
    rig.state.set_prompt("typed by hand")
    switch(rig, "Scene A")
    wait_for(lambda: bridge.status()["scene"] == "Scene A", 5, what="Scene A")
    assert rig.state.settings.prompt == "typed by hand"  # an unmapped scene leaves the look alone


def test_scene_switch_applies_mapped_preset(rig, bridge):
    st = bridge.status()
    assert st["obs_version"].startswith("29.") and st["websocket_version"].startswith("5.")
    scene_test(rig, bridge)


def test_custom_event_sets_prompt_and_preset(rig, bridge):
    v0 = rig.state.settings.prompt_version
    broadcast(rig, {"fluxrt": {"prompt": "a stained glass window"}})
    wait_for(lambda: rig.state.settings.prompt == "a stained glass window", 5, what="the CustomEvent prompt")
    assert rig.state.settings.prompt_version > v0 and rig.state.settings.preset is None
    broadcast(rig, {"fluxrt": {"preset": "cyberpunk"}})
    wait_for(lambda: rig.state.settings.preset == "cyberpunk", 5, what="the CustomEvent preset by name")
    broadcast(rig, {"fluxrt": {"preset": 1}})  # 1-based, as the user counts
    wait_for(lambda: rig.state.settings.preset == "watercolor", 5, what="the CustomEvent preset by index")
    # bad events: a clear error in status, nothing changes, the event thread lives on
    v1 = rig.state.settings.prompt_version
    broadcast(rig, {"fluxrt": {"preset": "no-such-look"}})
    wait_for(lambda: "no-such-look" in (bridge.status()["last_error"] or ""), 5, what="the refused preset error")
    broadcast(rig, {"fluxrt": {"prompt": 42}})
    wait_for(lambda: "must be a string" in (bridge.status()["last_error"] or ""), 5, what="the refused prompt error")
    broadcast(rig, {"someone_else": {"prompt": "not for us"}})
    broadcast(rig, {"fluxrt": {"preset": "next"}})
    wait_for(lambda: rig.state.settings.preset == "anime", 5, what="next after bad events")
    assert rig.state.settings.prompt_version == v1 + 1
    assert bridge.status()["connected"]


def test_text_source_shows_prompt(rig):
    name = f"FluxRT Prompt {time.monotonic_ns()}"
    b = ObsBridge(rig.obs_cfg(prompt_text_source=name), {}, rig.state).start()
    try:
        wait_for(lambda: b.status()["text_source_error"], 10, what="the missing-source error")
        assert name in b.status()["text_source_error"]
        with rig.obs.client() as c:
            c.send("CreateInput", {"sceneName": "Scene A", "inputName": name, "inputKind": "text_ft2_source_v2",
                                   "inputSettings": {"text": ""}, "sceneItemEnabled": True})

            def shown() -> str:
                return c.send("GetInputSettings", {"inputName": name}, raw=True)["inputSettings"].get("text", "")
            # the bridge looks again on its heartbeat and finds the new source
            wait_for(lambda: shown() == rig.state.settings.prompt, 10, what="the text source to show the prompt")
            rig.state.set_prompt("neon outlines, dark background")
            wait_for(lambda: shown() == "neon outlines, dark background", 5, what="the text source to follow")
            assert b.status()["text_source_error"] is None
    finally:
        b.stop()


def test_wrong_password_is_clear_and_no_password_is_logged(rig):
    """All logs captured at DEBUG (obsws-python's included, forced to DEBUG after the bridge set it to
    WARNING): neither the right nor a wrong password appears, and status names the problem."""
    wrong = "wrong-pw-Hy7-never-log-me"
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root, handler = logging.getLogger(), Keep(logging.DEBUG)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    good = ObsBridge(rig.obs_cfg(), SCENES, rig.state)
    bad = ObsBridge(rig.obs_cfg(password=wrong), {}, rig.state)
    none = ObsBridge(rig.obs_cfg(password=""), {}, rig.state)
    try:
        for b in (good, bad, none):
            b.start()
        logging.getLogger("obsws_python").setLevel(logging.DEBUG)  # a careless app might do this
        wait_for(lambda: good.status()["connected"], 10, what="the good bridge")
        wait_for(lambda: bad.status()["auth_failed"], 10, what="the wrong password to be reported")
        wait_for(lambda: none.status()["auth_failed"], 10, what="the missing password to be reported")
        switch(rig, "Scene B")
        switch(rig, "Scene A")
        # the failing bridges retry every second: wait until obsws-python has logged a connection attempt
        wait_for(lambda: any("Connecting with parameters" in r.getMessage() for r in list(records)), 10,
                 what="obsws-python's connection log line")
        time.sleep(1.2)  # and a few more retries and heartbeats
    finally:
        for b in (good, bad, none):
            b.stop()
        logging.getLogger("obsws_python").setLevel(logging.WARNING)
        root.removeHandler(handler)
        root.setLevel(old_level)
    st = bad.status()
    assert not st["connected"] and "rejected obs.password" in st["last_error"] and "Show Connect Info" in st["last_error"]
    assert "requires a password" in none.status()["last_error"]
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    assert "obsws_python" in text and "Connecting with parameters" in text  # we did capture its DEBUG/INFO output
    assert OBS_PASSWORD not in text and wrong not in text
    assert OBS_PASSWORD not in str(good.status()) and wrong not in str(bad.status())
    assert OBS_PASSWORD not in rig.obs.log_text() and wrong not in rig.obs.log_text()  # nor in OBS's own logs


def test_wrong_password_is_logged_once_without_traceback(rig, caplog):
    """Issue 10: a wrong password was an obsws-python ERROR line on every retry. Now one WARNING naming
    the fix, however many retries; the per-attempt detail only at DEBUG; no password anywhere."""
    wrong = "wrong-pw-Kc4-never-log-me"
    caplog.set_level(logging.DEBUG)  # everything, obsws-python's demoted lines included
    b = ObsBridge(rig.obs_cfg(password=wrong, reconnect_max_s=0.5), {}, rig.state).start()
    try:
        wait_for(lambda: b.status()["failed_attempts"] >= 4, 30, what="four failed connection attempts")
    finally:
        b.stop()
    records = list(caplog.records)
    lines = shown(records)
    assert len(lines) == 1, lines
    assert "vcam.obs.bridge" in lines[0] and "rejected obs.password" in lines[0] and "WARNING" in lines[0]
    assert "set obs.password" in lines[0] and "Tools -> WebSocket Server Settings" in lines[0]
    # the attempts did happen and obsws-python did complain each time, at DEBUG only
    per_attempt = [r for r in records
                   if r.name.startswith("obsws_python") and "failed to identify" in r.getMessage()]
    assert len(per_attempt) >= 4 and {r.levelno for r in per_attempt} == {logging.DEBUG}
    assert not any(r.exc_info or r.exc_text for r in records) and "Traceback" not in caplog.text
    everything = caplog.text + "\n".join(r.getMessage() for r in records) + str(b.status())
    assert wrong not in everything and OBS_PASSWORD not in everything
    st = b.status()
    assert st["state"] == "auth_failed" and st["auth_failed"] and "rejected obs.password" in st["last_error"]


def test_last_error_cleared_once_obs_comes_up(xvfb, caplog):  # noqa: F811
    """OBS started after the bridge: one "not reachable" line while it is away (however many retries and
    however OBS answers while starting), one "connected" line; then last_error is None and the outage
    is kept in last_failure/last_failure_at."""
    need_binaries("obs")
    caplog.set_level(logging.INFO)
    obs = Obs(xvfb.display)  # no auth, no script: a plain OBS on a port nothing listens on yet
    b = ObsBridge(ObsConfig(enabled=True, port=obs.port, reconnect_max_s=0.5), {}, ControlState(load_config()))
    try:
        b.start()
        wait_for(lambda: b.status()["failed_attempts"] >= 3, 30, what="three failed connection attempts")
        st = b.status()
        assert st["state"] == "unreachable" and "not reachable" in st["last_error"] and not st["connected"]
        t_before = time.time()
        obs.start()
        wait_for(lambda: b.status()["connected"], 30, what="the bridge to connect once OBS is up")
        st = b.status()
        assert st["last_error"] is None and st["state"] == "connected" and st["failed_attempts"] == 0
        assert "not reachable" in st["last_failure"] and st["last_failure_at"] <= time.time()
        assert st["last_failure_at"] >= t_before - 60  # a wall-clock time, not a monotonic one
    finally:
        b.stop()
        obs.close()
    lines = bridge_lines(caplog.records)
    assert len(lines) == 2, lines
    assert "WARNING" in lines[0] and "not reachable" in lines[0] and "start OBS" in lines[0]
    assert "INFO" in lines[1] and "connected to OBS 29." in lines[1]
    assert not any("Traceback" in line for line in shown(caplog.records))


def test_failure_reminder_is_rate_limited(caplog):
    """A failure that lasts is repeated as a reminder, at most once per remind_s (a short one here)."""
    caplog.set_level(logging.INFO)
    remind_s = 2.0
    b = ObsBridge(ObsConfig(enabled=True, port=free_port(), reconnect_max_s=0.5), {}, ControlState(load_config()),
                  remind_s=remind_s)
    t0 = time.monotonic()
    b.start()
    try:
        wait_for(lambda: any("still not connected" in line for line in bridge_lines(caplog.records)), 30,
                 what="a reminder")
    finally:
        b.stop()
        elapsed = time.monotonic() - t0
    lines = bridge_lines(caplog.records)
    reminders = [line for line in lines if "still not connected" in line]
    assert lines[0].count("not reachable") == 1 and "still not connected" not in lines[0]
    assert len(lines) == 1 + len(reminders)  # nothing else: the first line, then reminders only
    assert len(reminders) <= elapsed / remind_s + 1  # rate-limited, whatever the retry rate
    assert b.status()["failed_attempts"] > len(lines)  # more attempts than lines
    assert "reminder every 2 s" in reminders[0]


def test_obs_absent_backs_off_and_daemon_state_keeps_working():
    """No OBS at all: the bridge retries with capped exponential backoff; nothing else is disturbed."""
    state = ControlState(load_config())
    b = ObsBridge(ObsConfig(enabled=True, port=free_port(), reconnect_max_s=1.0), {}, state).start()
    try:
        wait_for(lambda: b.status()["retry_in_s"] == 1.0, 10, what="the backoff to reach its cap")
        st = b.status()
        assert not st["connected"] and "not reachable" in st["last_error"] and "connection refused" in st["last_error"]
        state.set_prompt("still works")
        assert state.settings.prompt == "still works"
    finally:
        t0 = time.monotonic()
        b.stop()
        assert time.monotonic() - t0 < 2  # stop does not wait out the backoff


@pytest.mark.timeout(180)
def test_obs_killed_and_restarted_bridge_reconnects_and_logs_each_change_once(rig, bridge, caplog):
    scene_test(rig, bridge)
    caplog.set_level(logging.INFO)
    caplog.clear()
    rig.obs.kill()  # SIGKILL: no goodbye on the websocket
    wait_for(lambda: not bridge.status()["connected"], 10, what="the bridge to notice OBS died")
    assert bridge.status()["last_error"]
    rig.state.set_prompt("typed while OBS was down")  # the daemon side carries on
    wait_for(lambda: bridge.status()["failed_attempts"] >= 3, 20, what="three refused reconnection attempts")
    rig.obs.start()
    wait_for(lambda: bridge.status()["connected"], 20, what="the bridge to reconnect")
    st = bridge.status()
    assert st["reconnects"] >= 1 and st["last_error"] is None and st["last_failure"]
    # one line when the connection went, none for the refused retries after it, one when it came back
    lines = bridge_lines(caplog.records)
    assert len(lines) == 2, lines
    assert "WARNING" in lines[0] and "lost" in lines[0] and "INFO" in lines[1] and "connected to OBS" in lines[1]
    assert not any("Traceback" in line for line in shown(caplog.records))
    scene_test(rig, bridge)
