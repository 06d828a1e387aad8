"""Real OBS Studio for tests: Xvfb on a free display, OBS 29 in a temporary HOME with obs-websocket
pre-configured and obs_scripts/fluxrt_presets.py loaded through the scene collection (facts.md, OBS).

Test modules import the fixtures they use (`from obs_harness import rig, xvfb`); each such module gets one
Xvfb and one OBS for all its tests (OBS 29 is up in about a second here, so that costs little). OBS runs
with `--multi` so that another OBS on the machine (a user's, another test run's) does not stop it with
its "already running" dialog. Tests skip with the reason when the
`obs` or `Xvfb` binary is missing (CI installs both, so there they really run).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "obs_scripts" / "fluxrt_presets.py"
SCENES = ("Scene A", "Scene B", "Scene C")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_binaries(*names: str) -> None:
    missing = [b for b in names if shutil.which(b) is None]
    if missing:
        pkgs = " ".join({"obs": "obs-studio", "Xvfb": "xvfb"}[b] for b in missing)
        pytest.skip(f"{' and '.join(missing)} not installed (Debian: apt-get install {pkgs})")


class Xvfb:
    """A virtual X display; `-displayfd` lets the server pick a free display number."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
                                     pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        os.close(w)
        with os.fdopen(r) as f:
            number = f.readline().strip()
        if not number:
            self.proc.kill()
            raise RuntimeError("Xvfb did not report a display number")
        self.display = f":{number}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Obs:
    """One OBS Studio process with its own HOME. `start()` returns when obs-websocket answers and, with the
    script configured, when the script's hotkeys are registered."""

    def __init__(self, display: str, *, password: str = "", script_settings: dict[str, Any] | None = None,
                 port: int | None = None):
        self.display = display
        self.password = password
        self.port = port or free_port()
        self.script_settings = script_settings
        self.home = Path(tempfile.mkdtemp(prefix="fluxrt-obs-"))
        self.proc: subprocess.Popen | None = None
        self._write_config()

    # ---- configuration written before the first start (facts.md: OBS 29 reads global.ini) -----------
    def _write_config(self) -> None:
        conf = self.home / ".config" / "obs-studio"
        (conf / "basic" / "scenes").mkdir(parents=True)
        auth = f"AuthRequired=true\nServerPassword={self.password}\n" if self.password else "AuthRequired=false\n"
        (conf / "global.ini").write_text(
            "[General]\nFirstRun=true\n\n[Basic]\nSceneCollection=Untitled\nSceneCollectionFile=Untitled\n\n"
            f"[OBSWebSocket]\nFirstLoad=false\nServerEnabled=true\nServerPort={self.port}\n{auth}"
            "AlertsEnabled=false\n")
        scripts = []
        if self.script_settings is not None:
            scripts.append({"path": str(SCRIPT), "settings": self.script_settings})
        sources = [{"id": "scene", "versioned_id": "scene", "name": name, "enabled": True,
                    "settings": {"custom_size": False, "id_counter": 0, "items": []}} for name in SCENES]
        collection = {"name": "Untitled", "current_scene": SCENES[0], "current_program_scene": SCENES[0],
                      "current_transition": "Cut", "transition_duration": 0, "transitions": [], "groups": [],
                      "scene_order": [{"name": n} for n in SCENES], "sources": sources,
                      "modules": {"scripts-tool": scripts}}
        (conf / "basic" / "scenes" / "Untitled.json").write_text(json.dumps(collection))

    # ---- process -----------------------------------------------------------------------------------
    def start(self, timeout: float = 40.0) -> "Obs":
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "QT_", "WAYLAND"))}
        env.update(HOME=str(self.home), DISPLAY=self.display, LIBGL_ALWAYS_SOFTWARE="1")
        out = open(self.home / "obs-stdout.txt", "ab")
        self.proc = subprocess.Popen(["obs", "--multi", "--disable-updater", "--disable-shutdown-check", "--minimize-to-tray"],
                                     cwd=self.home, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        quiet = logging.getLogger("obsws_python")
        level, quiet.level = quiet.level, logging.CRITICAL  # no traceback per refused attempt while OBS starts
        try:
            self._wait_ready(timeout)
        finally:
            quiet.setLevel(level)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"OBS exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with self.client(timeout=2) as c:
                    if self.script_settings is None:
                        return
                    names = c.send("GetHotkeyList", raw=True)["hotkeys"]
                    if "fluxrt.preset.1" in names:
                        return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
            time.sleep(0.2)
        raise TimeoutError(f"OBS not ready after {timeout} s ({last!r}):\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: OBS vanishes without closing its websocket connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    # ---- access ------------------------------------------------------------------------------------
    def client(self, timeout: float = 5.0, password: str | None = None):
        import obsws_python as obsws

        return obsws.ReqClient(host="127.0.0.1", port=self.port,
                               password=self.password if password is None else password, timeout=timeout)

    def log_text(self) -> str:
        """OBS's own log files plus its stdout (the script's log lines land there)."""
        parts = [p.read_text(errors="replace") for p in sorted((self.home / ".config/obs-studio/logs").glob("*.txt"))]
        out = self.home / "obs-stdout.txt"
        if out.exists():
            parts.append(out.read_text(errors="replace"))
        return "\n".join(parts)


@pytest.fixture(scope="module")
def xvfb() -> Iterator[Xvfb]:
    need_binaries("Xvfb")
    x = Xvfb()
    yield x
    x.stop()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy; returns its value or fails the test naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- the session rig: control state + API (token in force) + OBS (auth on) running our script -------

OBS_PASSWORD = "obs-pw-Zq81-never-log-me"
API_TOKEN = "api-token-7f3c-never-log-me-0123"


class Rig:
    """ControlState + control API (token required) + OBS with websocket auth and the presets script whose
    settings point at that API. Tests share it: they assert on changes they cause, not on absolute state."""

    def __init__(self, display: str):
        from vcam.config import load_config

        self.display = display
        from vcam.control.state import ControlState

        self.cfg = load_config(None, {"control.port": 0})
        self.state = ControlState(self.cfg)
        self.api = self._serve(0)
        self.port = self.api.port
        # a binding as a user would have saved it: ctrl+alt+2 -> slot 2 (restored by the script's obs_hotkey_load)
        self.obs = Obs(display, password=OBS_PASSWORD,
                       script_settings={"url": self.api.url, "token": API_TOKEN,
                                        "fluxrt.preset.2": [{"key": "OBS_KEY_2", "control": True, "alt": True}]})

    def _serve(self, port: int):
        from vcam.control.routes import create_app
        from vcam.control.server import ApiServer, bind_socket

        app = create_app(self.state, lambda: {"rig": True}, API_TOKEN)
        return ApiServer(app, bind_socket("127.0.0.1", port), token_required=True).start()

    def stop_api(self) -> None:
        self.api.stop()

    def start_api(self) -> None:
        self.api = self._serve(self.port)  # same port: the script's URL stays right

    def obs_cfg(self, **overrides: Any):
        """An ObsConfig for this OBS (right password unless overridden)."""
        from vcam.config import ObsConfig

        return ObsConfig(**{"enabled": True, "port": self.obs.port, "password": OBS_PASSWORD,
                            "reconnect_max_s": 1.0, **overrides})

    def close(self) -> None:
        self.obs.close()
        self.api.stop()


@pytest.fixture(scope="module")
def rig(xvfb: Xvfb) -> Iterator[Rig]:
    need_binaries("obs")
    r = Rig(xvfb.display)
    try:
        r.obs.start()
    except Exception:
        r.close()
        raise
    yield r
    r.close()
