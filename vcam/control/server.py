"""The daemon's one HTTP server: uvicorn in a background thread serving the control app (API, WebSocket,
page and the camera's stream) on a socket we bind ourselves, with the rules for where it may listen."""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from vcam.config import ControlConfig
from vcam.control.routes import StatusFn, create_app
from vcam.control.state import ControlState
from vcam.control.stream import StreamSource
from vcam.control.token import TokenError, read_token, token_path

log = logging.getLogger(__name__)


class ApiStartError(RuntimeError):
    """The control server cannot start; the message says why and what to change."""


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


def start_api_server(cfg: ControlConfig, state: ControlState, status: StatusFn,
                     stream: StreamSource | None = None) -> ApiServer:
    """Serve the control app as `cfg` says. Beyond loopback a token must exist (`fluxrt-cam token`), and
    it then guards the stream as it guards the API; on loopback both are open, as before."""
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
    app = create_app(state, status, token, stream=stream, local_only=token is None)
    return ApiServer(app, bind_socket(cfg.host, cfg.port), token is not None).start()
