"""The control API: HTTP JSON + a WebSocket that pushes settings and status, over `ControlState`.

Routes (all under /api, JSON in and out; errors are `{"detail": "..."}` with a 4xx code):
  GET  /api/settings                 the live settings (prompt, prompt_version, preset, seed, ...)
  PATCH /api/settings                change seed / steps / mode / cache.* / interpolation.*
  GET  /api/prompt, PUT /api/prompt  read / set the prompt
  GET  /api/presets                  the configured presets (index, name, prompt, ...) and the current one
  POST /api/presets/apply            {"preset": name | index | "next" | "prev"}
  POST /api/presets/next, /prev      step through the presets
  PUT  /api/mode                     {"mode": "live" | "passthrough" | "paused"}
  GET  /api/status                   {"settings": ..., "daemon": <the daemon's status dict>}
  WS   /ws                           pushes {"type": "settings", ...} on every change and
                                     {"type": "status", ...} every `status_interval_s`
  GET  /                             a small page to change the look
OpenAPI: /openapi.json (and /docs). When a token is in force every /api route and /ws need
`Authorization: Bearer <token>` (or `?token=<token>`, for the page and WebSocket clients that cannot set
headers); the page itself and the schema hold nothing secret and stay open.

Nothing here logs a request line: uvicorn's access log is off because `?token=` would land in it.
"""
import asyncio
import dataclasses
import ipaddress
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo
from starlette.exceptions import HTTPException as StarletteHTTPException

from vcam.config import CacheConfig, ControlConfig, InterpolationConfig
from vcam.control.page import PAGE_HTML
from vcam.control.state import ControlError, ControlState
from vcam.control.token import TokenError, read_token, token_matches, token_path
from vcam.messages import Settings

log = logging.getLogger(__name__)

StatusFn = Callable[[], dict[str, Any]]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Invalid JSON"},
    413: {"description": "Request body too large"},
    422: {"description": "A value that cannot be applied; `detail` says why"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such preset"}}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "Missing or wrong token"}}


# strict: JSON types as the schema says (no false -> 0.0, no "3" -> 3); unknown keys are an error
_STRICT = ConfigDict(extra="forbid", strict=True)


def _whole(v: Any) -> Any:
    # JSON Schema counts 8.0 as an integer; strict pydantic would not
    return int(v) if isinstance(v, float) and v.is_integer() else v


JsonInt = Annotated[int, BeforeValidator(_whole)]
# (this order keeps minimum/maximum in the schema)
PresetIndex = Annotated[int, Field(ge=0, le=10_000), BeforeValidator(_whole)]
PresetName = Annotated[str, Field(min_length=1, max_length=64)]


class _Body(BaseModel):
    model_config = _STRICT


class PresetRequest(_Body):
    preset: PresetIndex | PresetName = Field(
        description="A preset name, a 0-based index, 'next' or 'prev'")


class ModeRequest(_Body):
    mode: Literal["live", "passthrough", "paused"]


def _patch_model(name: str, source: type[BaseModel], fields: list[str]) -> type[BaseModel]:
    """A request model with `fields` of `source` (same types and bounds), all optional, unknown keys refused."""
    spec: dict[str, Any] = {}
    for f in fields:
        info = source.model_fields[f]
        # same annotation and constraints, default None ("unchanged"); an explicit null is refused
        ann = JsonInt if info.annotation is int else info.annotation
        spec[f] = (ann, FieldInfo.merge_field_infos(info, default=None))
    return create_model(name, __config__=_STRICT, **spec)


# the interpolation model path is a file on the daemon's machine: config only, not settable remotely
CachePatch = _patch_model("CachePatch", CacheConfig, list(CacheConfig.model_fields))
InterpolationPatch = _patch_model("InterpolationPatch", InterpolationConfig, ["method", "factor"])


class SettingsPatch(_Body):
    model_config = ConfigDict(**_STRICT, json_schema_extra={"minProperties": 1})

    seed: JsonInt = Field(None, ge=0, le=2**32 - 1)
    steps: JsonInt = Field(None, ge=1, le=8)
    mode: Literal["live", "passthrough", "paused"] = None
    cache: CachePatch = None  # type: ignore[valid-type]
    interpolation: InterpolationPatch = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _something(self) -> "SettingsPatch":
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one of seed, steps, mode, cache, interpolation")
        return self


def settings_dict(s: Settings) -> dict[str, Any]:
    return dataclasses.asdict(s)


def json_safe(value: Any) -> Any:
    """The daemon's status as strict JSON: NaN/inf become null, unknown objects their str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if callable(getattr(value, "item", None)) and getattr(value, "shape", None) == ():  # numpy scalars
        return json_safe(value.item())
    return str(value)


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _host_name(netloc: str) -> str:
    """'[::1]:8766' -> '::1', 'localhost:8766' -> 'localhost'."""
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


class RequestGuard:
    """Checks every request before the app sees it:
    - a body over `limit` bytes -> 413 (by Content-Length, or counted when the body comes chunked);
    - an `Origin` other than this server -> 403: a web page elsewhere cannot drive the daemon through the
      user's browser (a form POST to /api/presets/next needs no preflight);
    - with `local_only`, a Host that is not a loopback name -> 403 (DNS rebinding: evil.example resolving
      to 127.0.0.1 would otherwise be "same origin"). Beyond loopback the token does this job.
    """

    def __init__(self, app: Any, limit: int, local_only: bool):
        self.app, self.limit, self.local_only = app, limit, local_only

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin")
        problem = None
        if self.local_only and _host_name(host).lower() not in _LOOPBACK_NAMES and not _is_loopback_literal(host):
            problem = f"Host {host!r} is not this machine; use http://127.0.0.1:<port>"
        elif origin is not None:
            o = origin.decode("latin-1")
            if o.split("://", 1)[-1].rstrip("/") != host:
                problem = f"requests from pages at {o!r} are not accepted (cross-site)"
        if problem:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": problem[:120]})
            else:
                await JSONResponse({"detail": problem}, status_code=403)(scope, receive, send)
            return
        if scope["type"] == "http":
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.limit):
                await self._too_large(scope, receive, send)
                return
            if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                receive = await self._buffer(scope, receive, send)
                if receive is None:
                    return
        await self.app(scope, receive, send)

    async def _too_large(self, scope: dict, receive: Callable, send: Callable) -> None:
        msg = f"request body over {self.limit} bytes; send a shorter prompt"
        await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)

    async def _buffer(self, scope: dict, receive: Callable, send: Callable) -> Callable | None:
        """Read a body of unknown length up to the limit, then replay it to the app."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client left
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return None
            if not message.get("more_body", False):
                break
        body, done = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        return replay


def _is_loopback_literal(netloc: str) -> bool:
    try:
        return ipaddress.ip_address(_host_name(netloc)).is_loopback
    except ValueError:
        return False


class _Hub:
    """Fans settings changes out to WebSocket clients; changes arrive on any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: set[_WsClient] = set()

    def add(self, c: "_WsClient") -> None:
        with self._lock:
            self._clients.add(c)

    def remove(self, c: "_WsClient") -> None:
        with self._lock:
            self._clients.discard(c)

    def __call__(self, settings: Settings) -> None:  # a ControlState listener
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            try:
                c.loop.call_soon_threadsafe(c.push, settings)
            except RuntimeError:  # its event loop is closed: the server stopped
                self.remove(c)


class _WsClient:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.latest: Settings | None = None  # only the newest change matters to a client
        self.changed = asyncio.Event()

    def push(self, settings: Settings) -> None:
        self.latest = settings
        self.changed.set()


_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)$")


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        ctx = bad_json[0].get("ctx") or {}
        return JSONResponse({"detail": f"request body is not valid JSON: {ctx.get('error', 'parse error')}"},
                            status_code=400)
    lines, short = [], []
    for e in errors:
        # union members show up in loc as "constrained-str", "function-after[...]": keep field names only
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body" and _FIELD.match(str(p))) or "body"
        msg = "unknown field; remove it" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        lines.append(f"{loc}: {msg}")
        short.append({"loc": list(e.get("loc", ())), "msg": msg, "type": e.get("type")})
    # the offending input is not echoed back: it may be a 100 kB prompt
    return JSONResponse({"detail": "; ".join(lines), "errors": short}, status_code=422)


def create_app(state: ControlState, status: StatusFn, token: str | None, *,
               status_interval_s: float = 1.0, local_only: bool = False) -> FastAPI:
    """The control app over `state`. `status()` returns the daemon's JSON-able status dict.

    With a `token`, every /api route and /ws require it. `local_only` (a loopback bind) refuses requests
    whose Host is not a loopback name; cross-site `Origin`s are always refused.
    """
    limit = state.max_prompt_length

    class PromptRequest(_Body):
        prompt: str = Field(min_length=1, max_length=limit, pattern=r"\S",
                            description=f"At most {limit} characters, not only whitespace")

    app = FastAPI(title="FluxRT Camera control", version="1",
                  description="Change the look of the FluxRT virtual camera: prompt, presets, settings, status.",
                  responses=_ERRORS)
    app.add_exception_handler(RequestValidationError, _validation_error)

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

        # (a default, not Annotated: `bearer` is local and this module must also work under PEP 563)
        def require_token(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
            given = cred.credentials if cred else request.query_params.get("token")
            if not token_matches(token, given):
                raise HTTPException(401, "missing or wrong token: send `Authorization: Bearer <token>` "
                                         "(the token is printed by `fluxrt-cam token`)",
                                    headers={"WWW-Authenticate": "Bearer"})
        deps.append(Depends(require_token))

    api = APIRouter(prefix="/api", dependencies=deps, responses=_AUTH_ERRORS if token is not None else {})
    hub = _Hub()
    state.subscribe(hub)

    def snapshot() -> dict[str, Any]:
        return settings_dict(state.settings)

    def daemon_status() -> dict[str, Any]:
        return json_safe(status())

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
    def put_prompt(body: PromptRequest) -> dict[str, Any]:
        state.set_prompt(body.prompt)
        return snapshot()

    @api.get("/presets", summary="The configured presets")
    def get_presets() -> dict[str, Any]:
        items = [{"index": i, **p.model_dump(mode="json")} for i, p in enumerate(state.presets)]
        return {"presets": items, "current": state.settings.preset}

    @api.post("/presets/apply", summary="Apply a preset by name, 0-based index, 'next' or 'prev'",
              responses=_NOT_FOUND)
    def apply_preset(body: PresetRequest) -> dict[str, Any]:
        return _apply(body.preset)

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

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        if token is not None:
            auth = websocket.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else websocket.query_params.get("token")
            if not token_matches(token, given):
                await websocket.close(code=1008, reason="missing or wrong token")
                return
        await websocket.accept()
        client = _WsClient(asyncio.get_running_loop())
        hub.add(client)

        async def reader() -> None:  # only to notice the client leaving; incoming messages are ignored
            while True:
                await websocket.receive_text()

        async def writer() -> None:
            await websocket.send_json({"type": "settings", "settings": snapshot()})
            await websocket.send_json({"type": "status", "status": await run_in_threadpool(daemon_status)})
            next_status = time.monotonic() + status_interval_s
            while True:
                try:
                    await asyncio.wait_for(client.changed.wait(), max(0.0, next_status - time.monotonic()))
                except TimeoutError:
                    pass
                if client.changed.is_set():
                    client.changed.clear()
                    if client.latest is not None:
                        await websocket.send_json({"type": "settings", "settings": settings_dict(client.latest)})
                if time.monotonic() >= next_status:
                    await websocket.send_json({"type": "status", "status": await run_in_threadpool(daemon_status)})
                    next_status = time.monotonic() + status_interval_s

        tasks = [asyncio.create_task(reader()), asyncio.create_task(writer())]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            for t in done:
                exc = t.exception()
                if exc is not None and not isinstance(exc, (WebSocketDisconnect, RuntimeError)):
                    log.warning("control WebSocket closed: %s", type(exc).__name__)
        finally:
            hub.remove(client)

    app.add_middleware(RequestGuard, limit=max(64 * 1024, 8 * limit), local_only=local_only)
    return app


# ---- serving ---------------------------------------------------------------------------------------


class ApiStartError(RuntimeError):
    """The control API cannot start; the message says why and what to change."""


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ApiStartError with the fix when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ApiStartError(f"control.host = {host!r} does not resolve ({e}); use e.g. 127.0.0.1") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise ApiStartError(f"cannot listen on {host}:{port} ({e.strerror}); another daemon may be running "
                            f"there - stop it or set control.port to a free port (0 picks one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class ApiServer:
    """uvicorn serving the control app in a background thread on a socket we bound (so port 0 works)."""

    def __init__(self, app: Any, sock: socket.socket, token_required: bool):
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.port: int = port
        shown = "127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host
        self.url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        self.token_required = token_required
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", ws="websockets-sansio",
                                timeout_graceful_shutdown=2, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="control-api", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e

    def start(self, timeout: float = 10.0) -> "ApiServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise ApiStartError(f"control API did not start: {self._error!r}")
            time.sleep(0.01)
        log.info("control API on %s%s", self.url, " (token required)" if self.token_required else "")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck connections: stop waiting for them
            self._server.force_exit = True
            self._thread.join(timeout)
        self._sock.close()


def start_api_server(cfg: ControlConfig, state: ControlState, status: StatusFn) -> ApiServer:
    """Serve the control API as `cfg` says. Beyond loopback a token must exist (`fluxrt-cam token`)."""
    token: str | None = None
    if not is_loopback(cfg.host):
        path = token_path(cfg.token_file)
        try:
            token = read_token(path)
        except TokenError as e:
            raise ApiStartError(str(e)) from None
        if token is None:
            raise ApiStartError(
                f"control.host = {cfg.host!r} is reachable beyond this machine and no token exists at {path}: "
                f"run `fluxrt-cam token` to create one (clients then send it), or set control.host = '127.0.0.1'")
    app = create_app(state, status, token, local_only=token is None)
    return ApiServer(app, bind_socket(cfg.host, cfg.port), token is not None).start()
