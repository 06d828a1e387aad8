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

Logging: one line per change of the connection's state (connected, connection lost, password
rejected, OBS unreachable, other error), not one per attempt: the bridge retries for as long as the
daemon runs, so a per-attempt line would fill the log. While one failure lasts, a reminder at most
every `remind_s` (5 min). obsws-python logs at ERROR (some with a traceback) every failure it then
raises; the bridge reports those itself, so its records are demoted to DEBUG without the traceback.
`status()["last_error"]` is the current problem (None once connected); `last_failure`/`_at` keep the
most recent failure for after the fact.

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
_REMIND_S = 300.0  # while one failure lasts, say so again at most this often
# what a connection attempt can be expected to raise: reported in words, without a traceback
_EXPECTED = (OBSSDKError, OSError, TimeoutError, WebSocketException)


class _Scrub(logging.Filter):
    """Removes `secret` from obsws-python's records. Its warnings and errors become DEBUG lines without
    traceback, kept only when the bridge's own logger shows DEBUG: obsws-python raises each of those
    errors right after logging it, and the bridge reports them itself (once per state change, in plain
    words); otherwise a wrong password is an ERROR per retry."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            # the level check already ran (on obsws-python's logger, at WARNING), so a demoted record would
            # still reach an INFO log's handlers: decide here, by the bridge's level
            if not log.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        if self.secret:
            text = record.getMessage()
            if self.secret in text:
                record.msg, record.args = text.replace(self.secret, "********"), None
        return True


# Failure kinds: the bridge logs when the kind changes, not when the wording does (OBS starting up
# answers "refused", then a failed handshake, then "refused" again: one outage, one line).
AUTH, UNREACHABLE, ERROR = "auth_failed", "unreachable", "error"


def _explain(exc: BaseException, cfg: ObsConfig, password_set: bool) -> tuple[str, str]:
    """(message for the user naming the fix, failure kind)."""
    where = f"ws://{cfg.host}:{cfg.port}"
    text = str(exc)
    if isinstance(exc, OBSSDKError) and "no password provided" in text:
        return (f"OBS at {where} requires a password: set obs.password to the one shown in OBS "
                f"(Tools -> WebSocket Server Settings -> Show Connect Info)", AUTH)
    if isinstance(exc, OBSSDKError) and "failed to identify" in text:
        if password_set:
            return (f"OBS at {where} rejected obs.password (authentication failed): set obs.password to the "
                    f"password shown in OBS (Tools -> WebSocket Server Settings -> Show Connect Info)", AUTH)
        return f"OBS at {where} refused the connection during identification: {text}", ERROR
    if isinstance(exc, ConnectionRefusedError):
        return (f"OBS is not reachable at {where} (connection refused): start OBS and enable "
                f"Tools -> WebSocket Server Settings -> Enable WebSocket server, port {cfg.port}", UNREACHABLE)
    if isinstance(exc, (TimeoutError, OBSSDKError)) and "imeout" in f"{type(exc).__name__} {text}":
        return (f"OBS at {where} did not answer in time ({type(exc).__name__}): check obs.host and obs.port",
                UNREACHABLE)
    if isinstance(exc, (OSError, WebSocketException)):
        return f"connection to OBS at {where} failed: {type(exc).__name__}: {text}", UNREACHABLE
    return f"OBS at {where}: {type(exc).__name__}: {text}", ERROR


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


class ObsBridge:
    def __init__(self, cfg: ObsConfig, scenes: dict[str, str], state: ControlState, *,
                 connect_timeout_s: float = 3.0, remind_s: float = _REMIND_S):
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
        # the logged state, owned by the bridge thread: "connecting", "connected", "disconnected" or a kind
        self._remind_s = remind_s
        self._logged_state = "connecting"
        self._failing_since = self._remind_at = 0.0
        self._status: dict[str, Any] = {
            "enabled": True, "url": f"ws://{cfg.host}:{cfg.port}", "state": "connecting", "connected": False,
            "auth_failed": False, "last_error": None, "last_failure": None, "last_failure_at": None,
            "failed_attempts": 0, "connects": 0, "reconnects": 0, "retry_in_s": None, "obs_version": None,
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
        backoff = Backoff(min(_FIRST_RETRY_S, max_s), max_s)
        self._logged_state, self._failing_since = "connecting", time.monotonic()
        while not self._stop.is_set():
            try:
                req, ev = self._connect()
            except Exception as e:  # noqa: BLE001 - every failure is reported and retried
                delay = backoff.next()
                self._failed(e, delay)
                self._stop.wait(delay)
                continue
            backoff.reset()
            self._connected()
            reason, error = "stopped", None
            try:
                reason = self._serve(req, ev)
            except Exception as e:  # noqa: BLE001
                reason, error = _explain(e, self.cfg, bool(self._password))[0], e
            finally:
                self._close(req, ev)
            if not self._stop.is_set():
                self._lost(reason, error)

    # ---- reporting: status on every attempt, a log line per state change -------------------------------
    def _hide(self, text: str) -> str:
        return text.replace(self._password, "********") if self._password else text

    def _failed(self, exc: Exception, delay: float) -> None:
        msg, kind = _explain(exc, self.cfg, bool(self._password))
        msg = self._hide(msg)
        with self._lock:
            self._status["failed_attempts"] += 1
            attempts = self._status["failed_attempts"]
            self._status.update(state=kind, connected=False, auth_failed=kind == AUTH, last_error=msg,
                                last_failure=msg, last_failure_at=time.time(), retry_in_s=delay)
        now = time.monotonic()
        previous, self._logged_state = self._logged_state, kind
        # OBS refusing connections right after the connection was lost is the outage already logged
        if kind != previous and not (previous == "disconnected" and kind == UNREACHABLE):
            self._remind_at = now + self._remind_s
            expected = isinstance(exc, _EXPECTED)  # anything else is a bug here: ERROR with its traceback
            log.log(logging.WARNING if expected else logging.ERROR,
                    "%s; retrying every %s (quietly: logged again when this changes, or every %s while it lasts)",
                    msg, _duration(self.cfg.reconnect_max_s), _duration(self._remind_s),
                    exc_info=None if expected else exc)
        elif now >= self._remind_at:
            self._remind_at = now + self._remind_s
            log.warning("still not connected to OBS after %s and %d attempts (reminder every %s): %s",
                        _duration(round(now - self._failing_since)), attempts, _duration(self._remind_s), msg)
        else:
            log.debug("OBS connection attempt %d failed: %s", attempts, msg)

    def _connected(self) -> None:
        with self._lock:
            st = self._status
            st["connects"] += 1
            if st["connects"] > 1:
                st["reconnects"] += 1
            st.update(state="connected", connected=True, last_error=None, auth_failed=False, failed_attempts=0,
                      retry_in_s=None)
            versions = st["obs_version"], st["websocket_version"]
        self._logged_state = "connected"
        log.info("connected to OBS %s (obs-websocket %s) at %s", *versions, self._status["url"])

    def _lost(self, reason: str, error: Exception | None) -> None:
        msg = self._hide(f"connection to OBS at {self._status['url']} lost: {reason}")
        self._set(state="disconnected", connected=False, last_error=msg, last_failure=msg,
                  last_failure_at=time.time())
        self._logged_state, self._failing_since = "disconnected", time.monotonic()
        self._remind_at = self._failing_since + self._remind_s
        log.warning("%s; reconnecting when OBS is back", msg,
                    exc_info=None if error is None or isinstance(error, _EXPECTED) else error)

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
                        raise ControlError("fluxrt.preset must be a name, a number from 1, 'next' or 'prev'")
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
