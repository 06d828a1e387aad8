"""`fluxrt-cam obs-setup`: put the daemon's picture into an OBS scene without any camera device.

Adds (or updates) a Media Source named "FluxRT Camera" that plays the daemon's MJPEG stream
(`http://<control.host>:<control.port>/stream.mjpg`, with `?token=` when the control API needs one)
as a network stream, sized to the canvas; with `obs.prompt_text_source` set, also the Text source the
OBS bridge keeps showing the prompt. Running it again changes nothing but the stream settings and the
camera's size: the sources are found by name, never added twice.

The connection is made as the bridge makes it (host, port and password passed explicitly so
obsws-python never reads a config.toml) and obsws-python's loggers are silenced meanwhile: it logs the
password at INFO and every failure with a traceback, and here each failure becomes one line with its fix.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import obsws_python as obsws
from obsws_python.error import OBSSDKError, OBSSDKRequestError
from websocket import WebSocketException

from vcam.config import Config, ControlConfig, ObsConfig
from vcam.control.client import daemon_url
from vcam.control.server import is_loopback
from vcam.control.token import TokenError, read_token, token_path
# the bridge's wording for connection failures (refused, wrong or missing password, timeout), so the
# daemon's status and this command name a problem and its fix the same way
from vcam.obs.bridge import _explain

CAMERA_SOURCE = "FluxRT Camera"
MEDIA_KIND = "ffmpeg_source"
TEXT_KINDS = ("text_gdiplus", "text_ft2_source")  # GDI+ (Windows), FreeType 2 (Linux, macOS)
_ALIGN_TOP_LEFT, _ALIGN_BOTTOM_LEFT, _ALIGN_CENTER = 5, 9, 0  # OBS_ALIGN_* bit sets (LEFT 1, TOP 4, BOTTOM 8)


class ObsSetupError(RuntimeError):
    """One line: what is wrong and how to fix it."""


@dataclass
class SetupResult:
    scene: str
    canvas: tuple[int, int]
    camera: str  # "added", "added to the scene" (the input existed elsewhere) or "updated"
    url_shown: str  # the stream URL with any token masked
    text: str | None = None  # like `camera`, for obs.prompt_text_source
    notes: list[str] = field(default_factory=list)


def stream_url(control: ControlConfig) -> tuple[str, str]:
    """(the URL OBS plays, the same URL safe to print). Beyond loopback the daemon guards the stream with
    its token, which OBS can only send as `?token=`; on loopback no token is added (it would only end up
    in OBS's scene collection for nothing)."""
    if control.port == 0:
        raise ObsSetupError("control.port = 0 picks a new free port at every start, so OBS cannot be given "
                            "the stream's address: set control.port to a fixed port (default 8766)")
    url = daemon_url(control) + "/stream.mjpg"
    if is_loopback(control.host):
        return url, url
    path = token_path(control.token_file)
    try:
        token = read_token(path)
    except TokenError as e:
        raise ObsSetupError(str(e)) from None
    if token is None:
        raise ObsSetupError(f"control.host = {control.host!r} makes the daemon require its token and none "
                            f"exists at {path}: run `fluxrt-cam token`, then obs-setup again")
    return f"{url}?token={quote(token, safe='')}", f"{url}?token=********"


def media_settings(url: str) -> dict[str, Any]:
    """ffmpeg_source settings for a live network stream."""
    return {
        "is_local_file": False,
        "input": url,  # FFmpeg recognises the multipart MJPEG by its Content-Type: no input_format needed
        "reconnect_delay_sec": 2,  # the daemon is back within seconds of a restart; OBS's default waits 10
        # shown: (re)connects, so it starts on the live picture; hidden: closed, so OBS decodes nothing and the
        # daemon encodes for one viewer less. (OBS starts a restart-on-activate source only once it is shown.)
        "restart_on_activate": True,
        "close_when_inactive": True,
        "clear_on_media_end": True,  # a stopped daemon leaves an empty source, not a frozen picture that looks live
        "buffering_mb": 1,  # a live camera: little buffering, little latency
    }


@contextmanager
def _quiet_obsws() -> Iterator[None]:
    logger = logging.getLogger("obsws_python")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # its INFO lines hold the password; its errors are reported here
    try:
        yield
    finally:
        logger.setLevel(level)


def _connect(cfg: ObsConfig, timeout: float) -> Any:
    password = cfg.password.get_secret_value()
    try:
        return obsws.ReqClient(host=cfg.host, port=cfg.port, password=password, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line with its fix
        message = _explain(e, cfg, bool(password))[0]
        if "obs.password" in message or "requires a password" in message:
            message += " (in the [obs] section of --config, or --set obs.password=...)"
        raise ObsSetupError(message.replace(password, "********") if password else message) from None


def setup_obs(cfg: Config, scene: str | None = None, *, timeout: float = 5.0,
              platform: str = sys.platform) -> SetupResult:
    """Add or update the camera source (and the prompt text source) in `scene` (default: OBS's current
    program scene). Raises ObsSetupError."""
    url, shown = stream_url(cfg.control)
    with _quiet_obsws():
        req = _connect(cfg.obs, timeout)
        try:
            result = _setup(req, cfg, scene, url, platform)
        except OBSSDKRequestError as e:
            raise ObsSetupError(f"OBS refused a request: {e} Check the scene in OBS and run obs-setup again") from None
        except (OBSSDKError, OSError, WebSocketException) as e:
            raise ObsSetupError(f"the connection to OBS at ws://{cfg.obs.host}:{cfg.obs.port} failed during setup "
                                f"({type(e).__name__}: {e}); is OBS still running? Run obs-setup again") from None
        finally:
            try:
                req.disconnect()
            except Exception:  # noqa: BLE001 - already closed
                pass
    result.url_shown = shown
    if not cfg.control.enabled or not cfg.output.preview:
        result.notes.append("the daemon serves the stream only with control.enabled = true and "
                            "output.preview = true; the source stays empty until both are set")
    if result.text is not None and not cfg.obs.enabled:
        result.notes.append("obs.enabled is false, so the daemon will not keep the text source showing the "
                            "prompt: set [obs] enabled = true")
    return result


def _setup(req: Any, cfg: Config, scene: str | None, url: str, platform: str) -> SetupResult:
    scenes = [s["sceneName"] for s in req.send("GetSceneList", raw=True)["scenes"]]
    target = scene or req.send("GetCurrentProgramScene", raw=True)["currentProgramSceneName"]
    if target not in scenes:
        raise ObsSetupError(f"OBS has no scene named {target!r} (scenes: {', '.join(map(repr, scenes))}): pass one "
                            f"of them to --scene, or leave --scene out to use the current scene")
    video = req.send("GetVideoSettings", raw=True)
    width, height = int(video["baseWidth"]), int(video["baseHeight"])
    inputs = {i["inputName"]: i for i in req.send("GetInputList", raw=True)["inputs"]}

    camera, cam_item = _ensure(req, target, inputs, scenes, CAMERA_SOURCE, (MEDIA_KIND,), MEDIA_KIND,
                               media_settings(url), "a Media Source")
    req.send("SetSceneItemTransform", {"sceneName": target, "sceneItemId": cam_item, "sceneItemTransform": {
        "positionX": 0.0, "positionY": 0.0, "rotation": 0.0, "alignment": _ALIGN_TOP_LEFT,
        # scale to fit inside the canvas, keeping the picture's aspect ratio
        "boundsType": "OBS_BOUNDS_SCALE_INNER", "boundsAlignment": _ALIGN_CENTER,
        "boundsWidth": float(width), "boundsHeight": float(height),
        "cropLeft": 0, "cropRight": 0, "cropTop": 0, "cropBottom": 0}})
    result = SetupResult(scene=target, canvas=(width, height), camera=camera, url_shown="")

    name = cfg.obs.prompt_text_source
    if name:
        kind = "" if name in inputs else _text_kind(req, platform)  # only needed to create one
        font = {"face": "Arial" if kind.startswith("text_gdiplus") else "Sans Serif", "size": max(16, height // 20),
                "style": "", "flags": 0}
        # the prompt's text itself is the bridge's job: set here only on creation, as a first value
        text, text_item = _ensure(req, target, inputs, scenes, name, TEXT_KINDS, kind, None, "a Text source",
                                  create_settings={"text": cfg.prompt.text, "font": font, "outline": True})
        if text == "added":  # a text source the user already placed keeps its place and look
            margin = height // 30
            req.send("SetSceneItemTransform", {"sceneName": target, "sceneItemId": text_item, "sceneItemTransform": {
                "positionX": float(margin), "positionY": float(height - margin), "alignment": _ALIGN_BOTTOM_LEFT,
                # long prompts shrink to the canvas width; short ones keep their font size
                "boundsType": "OBS_BOUNDS_MAX_ONLY", "boundsAlignment": _ALIGN_BOTTOM_LEFT,
                "boundsWidth": float(width - 2 * margin), "boundsHeight": float(height // 5)}})
        _keep_above(req, target, text_item, cam_item)
        result.text = text
    return result


def _ensure(req: Any, scene: str, inputs: dict[str, dict[str, Any]], scenes: list[str], name: str,
            kinds: tuple[str, ...], create_kind: str, settings: dict[str, Any] | None, what: str,
            create_settings: dict[str, Any] | None = None) -> tuple[str, int]:
    """(what was done, scene item id): the input `name` exists with `settings` applied and has an item in
    `scene`. An existing input of another kind (or a scene of that name) is the user's: refused, not replaced."""
    if name in scenes:
        raise ObsSetupError(f"OBS has a scene named {name!r}, so no source can take that name: rename the scene "
                            f"in OBS and run obs-setup again")
    existing = inputs.get(name)
    if existing is None:
        created = req.send("CreateInput", {"sceneName": scene, "inputName": name, "inputKind": create_kind,
                                           "inputSettings": {**(create_settings or {}), **(settings or {})},
                                           "sceneItemEnabled": True}, raw=True)
        return "added", int(created["sceneItemId"])
    kind = existing.get("unversionedInputKind") or existing.get("inputKind", "")
    if kind not in kinds:
        raise ObsSetupError(f"OBS already has a source named {name!r} of kind {kind}, not {what}: rename or delete "
                            f"it in OBS, then run obs-setup again")
    if settings:
        req.send("SetInputSettings", {"inputName": name, "inputSettings": settings, "overlay": True})
    items = req.send("GetSceneItemList", {"sceneName": scene}, raw=True)["sceneItems"]
    found = [i["sceneItemId"] for i in items if i.get("sourceName") == name]
    if found:
        return "updated", int(found[0])
    created = req.send("CreateSceneItem", {"sceneName": scene, "sourceName": name, "sceneItemEnabled": True}, raw=True)
    return "added to the scene", int(created["sceneItemId"])


def _text_kind(req: Any, platform: str) -> str:
    """The text input kind this OBS has, GDI+ first on Windows (as OBS's own menu offers), FreeType 2 elsewhere.
    Versioned names (text_ft2_source_v2) are what OBS creates today; the list says which versions exist."""
    available = req.send("GetInputKindList", {"unversioned": False}, raw=True)["inputKinds"]
    order = TEXT_KINDS if platform == "win32" else TEXT_KINDS[::-1]
    for base in order:
        for kind in available:
            if kind == base or kind.startswith(base + "_v"):
                return kind
    raise ObsSetupError("this OBS has no Text source plugin (text_gdiplus / text_ft2_source): install OBS's "
                        "standard plugins, or leave obs.prompt_text_source empty")


def _keep_above(req: Any, scene: str, top: int, below: int) -> None:
    """Move item `top` above item `below` when it is under it (the prompt must not hide behind the camera)."""
    items = {i["sceneItemId"]: i["sceneItemIndex"] for i in
             req.send("GetSceneItemList", {"sceneName": scene}, raw=True)["sceneItems"]}
    if items.get(top, 0) < items.get(below, 0):
        req.send("SetSceneItemIndex", {"sceneName": scene, "sceneItemId": top, "sceneItemIndex": items[below]})
