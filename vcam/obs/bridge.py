"""OBS bridge: obs-websocket events drive the look; an optional OBS text source shows the prompt.

- `CurrentProgramSceneChanged` -> the preset mapped to that scene (`[scenes]` in the config).
- `CustomEvent` with `{"fluxrt": {"prompt": "..."}}` or `{"fluxrt": {"preset": name | index | "next" |
  "prev"}}` -> that prompt or preset. Any obs-websocket client (Stream Deck, Streamer.bot, scripts)
  sends these with `BroadcastCustomEvent`.
- On (re)connection the current program scene's preset is applied when the scene differs from the
  last one this bridge saw (so a reconnect does not undo a prompt typed meanwhile).

One thread owns the connection: it connects (host/port/password passed explicitly, so obsws-python
never reads a config.toml), watches the event thread (obsws-python's dies silently when OBS goes
away), pings OBS every few seconds, pushes the prompt to the text source, and reconnects with capped
exponential backoff. Event callbacks run on obsws-python's thread and only touch `ControlState`
(thread-safe); the ReqClient, which is not thread-safe, is used by the bridge thread alone.

The password: obsws-python logs it at INFO and puts it in its clients' repr. Its loggers are kept at
WARNING, a filter scrubs the password from whatever they still emit, and no client is ever formatted.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import obsws_python as obsws
from obsws_python.error import OBSSDKError
from obsws_python.subs import Subs
from websocket import WebSocketException

from vcam.backoff import Backoff
from vcam.config import ObsConfig
from vcam.control.state import ControlError, ControlState
from vcam.messages import Settings

log = logging.getLogger(__name__)

_OBSWS_LOGGERS = ("obsws_python", "obsws_python.baseclient.ObsClient", "obsws_python.reqs.ReqClient",
                  "obsws_python.events.EventClient")
_PING_S = 3.0  # heartbeat: notices a dead connection even when no FIN arrives
_FIRST_RETRY_S = 0.5


class _Scrub(logging.Filter):
    """Removes `secret` from obsws-python's records; drops its connection-failure tracebacks (the bridge
    reports those itself, once, in plain words)."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (OSError, TimeoutError, WebSocketException)):
            return False
        if self.secret:
            text = record.getMessage()
            if self.secret in text:
                record.msg, record.args = text.replace(self.secret, "********"), None
        return True


def _explain(exc: BaseException, cfg: ObsConfig, password_set: bool) -> tuple[str, bool]:
    """(message for the user, is it an authentication failure)."""
    where = f"ws://{cfg.host}:{cfg.port}"
    text = str(exc)
    if isinstance(exc, OBSSDKError) and "no password provided" in text:
        return (f"OBS at {where} requires a password: set obs.password to the one shown in OBS "
                f"(Tools -> WebSocket Server Settings -> Show Connect Info)", True)
    if isinstance(exc, OBSSDKError) and "failed to identify" in text:
        if password_set:
            return (f"OBS at {where} rejected obs.password (authentication failed): copy the password from OBS "
                    f"(Tools -> WebSocket Server Settings -> Show Connect Info)", True)
        return f"OBS at {where} refused the connection during identification: {text}", False
    if isinstance(exc, ConnectionRefusedError):
        return (f"OBS is not reachable at {where} (connection refused): start OBS and enable "
                f"Tools -> WebSocket Server Settings -> Enable WebSocket server, port {cfg.port}", False)
    if isinstance(exc, (TimeoutError, OBSSDKError)) and "imeout" in f"{type(exc).__name__} {text}":
        return f"OBS at {where} did not answer in time ({type(exc).__name__})", False
    if isinstance(exc, (OSError, WebSocketException)):
        return f"connection to OBS at {where} failed: {type(exc).__name__}: {text}", False
    return f"OBS at {where}: {type(exc).__name__}: {text}", False


class ObsBridge:
    def __init__(self, cfg: ObsConfig, scenes: dict[str, str], state: ControlState, *,
                 connect_timeout_s: float = 3.0):
        self.cfg = cfg
        self.scenes = dict(scenes)
        self.state = state
        self._password = cfg.password.get_secret_value()
        self._timeout = connect_timeout_s
        self._stop = threading.Event()
        self._wake = threading.Event()  # a prompt change (text source) or stop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._scrub = _Scrub(self._password)
        self._subscribed = False
        self._last_scene: str | None = None
        self._exit_started = False
        self._text_pushed: str | None = None
        self._status: dict[str, Any] = {
            "enabled": True, "url": f"ws://{cfg.host}:{cfg.port}", "connected": False, "auth_failed": False,
            "last_error": None, "connects": 0, "reconnects": 0, "retry_in_s": None, "obs_version": None,
            "websocket_version": None, "scene": None, "events": 0, "last_event": None,
            "text_source": cfg.prompt_text_source or None, "text_source_error": None,
        }

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "ObsBridge":
        if self._thread is not None:
            return self
        for name in _OBSWS_LOGGERS:
            lg = logging.getLogger(name)
            if name == "obsws_python":
                lg.setLevel(logging.WARNING)
            lg.addFilter(self._scrub)
        if not self._subscribed:
            self.state.subscribe(self._on_settings)
            self._subscribed = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="obs-bridge", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for name in _OBSWS_LOGGERS:
            logging.getLogger(name).removeFilter(self._scrub)
        if self._subscribed:
            self.state.unsubscribe(self._on_settings)
            self._subscribed = False

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._status)

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._status.update(values)

    # ---- the connection loop -------------------------------------------------------------------
    def _run(self) -> None:
        max_s = self.cfg.reconnect_max_s
        backoff, last_logged = Backoff(min(_FIRST_RETRY_S, max_s), max_s), None
        while not self._stop.is_set():
            try:
                req, ev = self._connect()
            except Exception as e:  # noqa: BLE001 - every failure is reported and retried
                msg, auth = _explain(e, self.cfg, bool(self._password))
                msg = msg.replace(self._password, "********") if self._password else msg
                delay = backoff.next()
                self._set(connected=False, last_error=msg, auth_failed=auth, retry_in_s=delay)
                if msg != last_logged:  # once per distinct problem, not once per retry
                    log.warning("%s; retrying (backoff up to %.0f s)", msg, self.cfg.reconnect_max_s)
                    last_logged = msg
                self._stop.wait(delay)
                continue
            backoff.reset()
            last_logged = None
            with self._lock:
                self._status["connects"] += 1
                if self._status["connects"] > 1:
                    self._status["reconnects"] += 1
                self._status.update(connected=True, last_error=None, auth_failed=False, retry_in_s=None)
            log.info("connected to OBS at %s", self._status["url"])
            reason = "stopped"
            try:
                reason = self._serve(req, ev)
            except Exception as e:  # noqa: BLE001
                reason = _explain(e, self.cfg, bool(self._password))[0]
            finally:
                self._close(req, ev)
            if not self._stop.is_set():
                self._set(connected=False, last_error=f"connection to OBS lost: {reason}")
                log.warning("connection to OBS lost (%s); reconnecting", reason)

    def _connect(self) -> tuple[Any, Any]:
        self._exit_started = False
        args = dict(host=self.cfg.host, port=self.cfg.port, password=self._password, timeout=self._timeout)
        req = obsws.ReqClient(**args)
        try:
            version = req.send("GetVersion", raw=True)
            ev = obsws.EventClient(**args, subs=Subs.GENERAL | Subs.SCENES)
        except BaseException:
            self._close(req, None)
            raise
        ev.callback.register([self.on_current_program_scene_changed, self.on_custom_event, self.on_exit_started])
        self._set(obs_version=version.get("obsVersion"), websocket_version=version.get("obsWebSocketVersion"))
        scene = req.send("GetCurrentProgramScene", raw=True).get("currentProgramSceneName")
        if scene != self._last_scene:
            self._scene(scene, via="connect")
        self._text_pushed = None  # OBS may have restarted: push the prompt again
        self._wake.set()
        return req, ev

    def _serve(self, req: Any, ev: Any) -> str:
        next_ping = time.monotonic() + _PING_S
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            if self._exit_started:
                return "OBS is shutting down"
            if not ev.worker.is_alive():
                return "the event connection closed"
            if self.cfg.prompt_text_source:
                self._push_text(req)
            if time.monotonic() >= next_ping:
                req.send("GetVersion", raw=True)  # raises when the connection is gone
                if self._status["text_source_error"]:
                    self._text_pushed = None  # the source may exist by now: look again
                    self._wake.set()
                next_ping = time.monotonic() + _PING_S
        return "stopped"

    @staticmethod
    def _close(req: Any, ev: Any) -> None:
        for client in (ev, req):
            if client is None:
                continue
            try:
                client.base_client.ws.close(timeout=0.5)
            except Exception:  # noqa: BLE001 - already closed
                pass
        if ev is not None:
            ev.worker.join(1.0)

    # ---- the text source -----------------------------------------------------------------------
    def _on_settings(self, settings: Settings) -> None:  # ControlState listener, any thread
        if self.cfg.prompt_text_source:
            self._wake.set()

    def _push_text(self, req: Any) -> None:
        prompt = self.state.settings.prompt
        if prompt == self._text_pushed:
            return
        name = self.cfg.prompt_text_source
        inputs = req.send("GetInputList", raw=True).get("inputs", [])
        if name not in {i.get("inputName") for i in inputs}:
            self._set(text_source_error=f"OBS has no source named {name!r}: add a Text source with that name "
                                        f"or change obs.prompt_text_source")
            self._text_pushed = prompt  # tried; retried on the next change or reconnect
            return
        req.send("SetInputSettings", {"inputName": name, "inputSettings": {"text": prompt}, "overlay": True})
        self._text_pushed = prompt
        self._set(text_source_error=None)

    # ---- events (obsws-python's thread; an exception here would kill it, so none escapes) ---------
    def _event(self, kind: str, detail: Any, error: str | None = None) -> None:
        with self._lock:
            self._status["events"] += 1
            self._status["last_event"] = {"type": kind, "detail": detail, "error": error, "ts": time.time()}
            if error:
                self._status["last_error"] = error

    def _scene(self, scene: str | None, via: str) -> None:
        self._last_scene = scene
        self._set(scene=scene)
        preset = self.scenes.get(scene or "")
        if preset is None:
            return
        try:
            self.state.apply_preset(preset)
            self._event(via, {"scene": scene, "preset": preset})
        except ControlError as e:
            self._event(via, {"scene": scene, "preset": preset}, f"scene {scene!r}: {e}")
            log.warning("scene %r maps to preset %r: %s", scene, preset, e)

    def on_current_program_scene_changed(self, data: Any) -> None:
        try:
            self._scene(getattr(data, "scene_name", None), via="scene")
        except Exception as e:  # noqa: BLE001
            log.exception("OBS scene event failed: %s", type(e).__name__)

    def on_custom_event(self, data: Any) -> None:
        try:
            payload = getattr(data, "fluxrt", None)
            if not isinstance(payload, dict):
                return  # someone else's custom event
            try:
                if "prompt" in payload:
                    if not isinstance(payload["prompt"], str):
                        raise ControlError("fluxrt.prompt must be a string")
                    self.state.set_prompt(payload["prompt"])
                    self._event("custom", {"prompt": payload["prompt"][:200]})
                elif "preset" in payload:
                    ref = payload["preset"]
                    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
                        raise ControlError("fluxrt.preset must be a name, a 0-based index, 'next' or 'prev'")
                    self.state.apply_preset(ref)
                    self._event("custom", {"preset": ref})
                else:
                    raise ControlError(f"fluxrt custom event needs 'prompt' or 'preset', got keys {sorted(payload)}")
            except ControlError as e:
                self._event("custom", {"keys": sorted(payload)}, f"custom event: {e}")
                log.warning("OBS custom event refused: %s", e)
        except Exception as e:  # noqa: BLE001
            log.exception("OBS custom event failed: %s", type(e).__name__)

    def on_exit_started(self, data: Any) -> None:
        self._exit_started = True
        self._wake.set()
