"""The control app: HTTP JSON + a WebSocket that pushes settings and status, over `ControlState`, and
the camera's picture as MJPEG.

Routes (JSON in and out under /api; errors are `{"detail": "..."}` with a 4xx code):
  GET  /api/settings                 the live settings (prompt, prompt_version, preset, seed, ...)
  PATCH /api/settings                change seed / steps / mode / cache.* / interpolation.*
  GET  /api/prompt, PUT /api/prompt  read / set the prompt
  GET  /api/presets                  the configured presets (index: 1 = the first, name, prompt, ...) and the
                                     current one
  POST /api/presets/apply            {"preset": name | index (1 = the first) | "next" | "prev"}
  POST /api/presets/next, /prev      step through the presets
  POST /api/presets                  add a preset to the running daemon {"name", "prompt", "seed"?, "steps"?}
  PUT  /api/mode                     {"mode": "live" | "passthrough" | "paused"}
  GET  /api/status                   {"settings": ..., "daemon": <the daemon's status dict>}
  GET  /api/history                  the charts' figures of the last minutes (sampled while someone watches)
  WS   /ws                           pushes {"type": "settings", ...} on every change and
                                     {"type": "status", ...} every `status_interval_s`
  GET  /stream.mjpg, /frame.jpg      what the virtual camera shows (MJPEG / one JPEG); `?overlay=cells`
                                     tints the cells the spatial cache recomputed (when a stream is given)
  GET  /input.mjpg, /input.jpg       what the source sends, as the engine gets it (when the stream has an input)
  GET  /                             the control page (vcam/control/page.py)
OpenAPI: /openapi.json (and /docs). When a token is in force every /api route, /ws and the picture
routes need `Authorization: Bearer <token>` (or `?token=<token>`, for the page, <img> and WebSocket
clients that cannot set headers); the page itself and the schema hold nothing secret and stay open.

Nothing here logs a request line: uvicorn's access log is off because `?token=` would land in it.
(No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and one of the
bodies is a class local to `create_app`.)
"""
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from vcam.control.guard import RequestGuard
from vcam.control.hub import Hub
from vcam.config import Preset
from vcam.control.page import StatusHistory, page_html
from vcam.control.requests import (ModeRequest, PresetRequest, SettingsPatch, new_preset_request, prompt_request,
                                   validation_error)
from vcam.control.sanitize import json_safe
from vcam.control.state import ControlError, ControlState, PresetConflict
from vcam.control.stream import MultipartResponse, StreamSource
from vcam.control.token import token_matches
from vcam.messages import Settings

StatusFn = Callable[[], dict[str, Any]]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid JSON"},
    413: {"description": "Request body too large"},
    422: {"description": "A value that cannot be applied; `detail` says why"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such preset"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The name is taken (send replace), reads as a number or next/prev, or the list is full"}}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "Missing or wrong token"}}
_NO_PICTURE: dict[int | str, dict[str, Any]] = {503: {"description": "No picture yet"}}
Overlay = Literal["none", "cells"]


def settings_dict(s: Settings) -> dict[str, Any]:
    return json_safe(s)


def create_app(state: ControlState, status: StatusFn, token: str | None, *, stream: StreamSource | None = None,
               status_interval_s: float = 1.0, local_only: bool = False) -> FastAPI:
    """The control app over `state`. `status()` returns the daemon's JSON-able status dict; `stream`
    (optional) serves /stream.mjpg and /frame.jpg.

    With a `token`, every /api route, /ws and the picture routes require it. `local_only` (a loopback
    bind) refuses requests whose Host is not a loopback name; cross-site `Origin`s are always refused.
    """
    limit = state.max_prompt_length
    PromptRequest = prompt_request(limit)
    NewPreset = new_preset_request(limit)
    history = StatusHistory()

    app = FastAPI(title="FluxRT Camera control", version="1",
                  description="Change the look of the FluxRT virtual camera: prompt, presets, settings, status.",
                  responses=_ERRORS)
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette lists only the first route's methods for a shared path
            methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(request.url.path)
                       for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, exc: ControlError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    deps: list[Any] = []
    if token is not None:
        bearer = HTTPBearer(auto_error=False, description="The token printed by `fluxrt-cam token`")

        def require_token(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
            given = cred.credentials if cred else request.query_params.get("token")
            if not token_matches(token, given):
                raise HTTPException(401, "missing or wrong token: send `Authorization: Bearer <token>` "
                                         "(the token is printed by `fluxrt-cam token`)",
                                    headers={"WWW-Authenticate": "Bearer"})
        deps.append(Depends(require_token))
    auth_errors = _AUTH_ERRORS if token is not None else {}

    api = APIRouter(prefix="/api", dependencies=deps, responses=auth_errors)
    hub = Hub()
    state.subscribe(hub)

    def snapshot() -> dict[str, Any]:
        return settings_dict(state.settings)

    def daemon_status() -> dict[str, Any]:
        st = json_safe(status())
        history.add(st)  # every status asked for (the page's WebSocket, every second) feeds the charts
        return st

    @api.get("/settings", summary="The live settings")
    def get_settings() -> dict[str, Any]:
        return snapshot()

    @api.patch("/settings", summary="Change seed, steps, mode, cache or interpolation settings")
    def patch_settings(body: SettingsPatch) -> dict[str, Any]:
        fields = body.model_dump(exclude_none=True)
        state.update(**fields)
        return snapshot()

    @api.get("/prompt", summary="The current prompt")
    def get_prompt() -> dict[str, Any]:
        s = state.settings
        return {"prompt": s.prompt, "prompt_version": s.prompt_version, "preset": s.preset}

    @api.put("/prompt", summary="Set the prompt")
    def put_prompt(body: PromptRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        state.set_prompt(body.prompt)  # type: ignore[attr-defined]
        return snapshot()

    @api.get("/presets", summary="The configured presets")
    def get_presets() -> dict[str, Any]:
        items = [{"index": i, **p.model_dump(mode="json")} for i, p in enumerate(state.presets, start=1)]
        return {"presets": items, "current": state.settings.preset}

    @api.post("/presets/apply", summary="Apply a preset by name, number (1 = the first), 'next' or 'prev'",
              responses=_NOT_FOUND)
    def apply_preset(body: PresetRequest) -> dict[str, Any]:
        return _apply(body.preset)

    @api.post("/presets", summary="Add a preset to the running daemon (until it stops; validated as in the config)",
              status_code=201, responses=_CONFLICT)
    def add_preset(body: NewPreset) -> dict[str, Any]:  # type: ignore[valid-type]
        fields = body.model_dump(exclude={"replace", "apply"}, exclude_none=True)  # type: ignore[attr-defined]
        try:
            added = state.add_preset(Preset.model_validate(fields), replace=body.replace,  # type: ignore[attr-defined]
                                     apply=body.apply)  # type: ignore[attr-defined]
        except PresetConflict as e:
            raise HTTPException(409, str(e)) from None
        listing = get_presets()
        return {**listing, "added": next(p for p in listing["presets"] if p["name"] == added.name)}

    @api.post("/presets/next", summary="Apply the next preset", responses=_NOT_FOUND)
    def next_preset() -> dict[str, Any]:
        return _apply("next")

    @api.post("/presets/prev", summary="Apply the previous preset", responses=_NOT_FOUND)
    def prev_preset() -> dict[str, Any]:
        return _apply("prev")

    def _apply(ref: str | int) -> dict[str, Any]:
        try:
            state.apply_preset(ref)
        except ControlError as e:  # the request is well-formed; the preset does not exist
            raise HTTPException(404, str(e)) from None
        return snapshot()

    @api.put("/mode", summary="live (edit frames), passthrough (webcam as is) or paused (last frame, then a paused card)")
    def put_mode(body: ModeRequest) -> dict[str, Any]:
        state.update(mode=body.mode)
        return snapshot()

    @api.get("/status", summary="Settings and the daemon's status (sources, engine, per-stage metrics, output)")
    def get_status() -> dict[str, Any]:
        return {"settings": snapshot(), "daemon": daemon_status()}

    @api.get("/history", summary="The page's chart figures (fps, latency, active fraction) of the last minutes, "
                                 "on the daemon's uptime axis, sampled while somebody watches the status")
    def get_history() -> dict[str, Any]:
        return {"samples": history.samples()}

    app.include_router(api)

    if stream is not None:
        media = APIRouter(dependencies=deps, responses={**auth_errors, **_NO_PICTURE})

        @media.get("/frame.jpg", summary="What the virtual camera shows now, as one JPEG",
                   response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
        def frame(overlay: Overlay = "none") -> Response:
            jpeg = stream.snapshot(overlay == "cells")
            if jpeg is None:
                raise HTTPException(503, "no picture yet: the daemon is starting; try again in a moment")
            return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

        # (not in the schema: an endless response is no use to schema-driven clients and fuzzers)
        # (async: nothing here blocks, so a viewer does not cost a threadpool hop to start)
        @media.get("/stream.mjpg", include_in_schema=False)
        async def mjpeg(overlay: Overlay = "none") -> MultipartResponse:
            return MultipartResponse(stream.multipart(overlay == "cells"))

        source = stream.input  # what the engine gets (the daemon sets it; tests may not)
        if source is not None:
            @media.get("/input.jpg", summary="What the source sends now, fitted to the engine's size, as one JPEG",
                       response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
            def input_frame() -> Response:
                jpeg = source.snapshot(False)
                if jpeg is None:
                    raise HTTPException(503, "no input picture yet: the source is starting or paused")
                return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

            @media.get("/input.mjpg", include_in_schema=False)
            async def input_mjpeg() -> MultipartResponse:
                return MultipartResponse(source.multipart(False))

        app.include_router(media)

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html(), headers={"Cache-Control": "no-cache"})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        if token is not None:
            auth = websocket.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else websocket.query_params.get("token")
            if not token_matches(token, given):
                await websocket.close(code=1008, reason="missing or wrong token")
                return
        await websocket.accept()
        await hub.serve(websocket, snapshot, daemon_status, settings_dict, status_interval_s)

    app.add_middleware(RequestGuard, limit=max(64 * 1024, 8 * limit), local_only=local_only)
    return app
