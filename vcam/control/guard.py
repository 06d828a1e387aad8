"""RequestGuard: the ASGI middleware that checks every HTTP and WebSocket request before the app sees it."""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _host_name(netloc: str) -> str:
    """'[::1]:8766' -> '::1', 'localhost:8766' -> 'localhost'."""
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _is_loopback_literal(netloc: str) -> bool:
    try:
        return ipaddress.ip_address(_host_name(netloc)).is_loopback
    except ValueError:
        return False


class RequestGuard:
    """- a body over `limit` bytes -> 413 (by Content-Length, or counted when the body comes chunked);
    - an `Origin` other than this server -> 403: a web page elsewhere cannot drive the daemon (or watch the
      camera) through the user's browser (a form POST to /api/presets/next needs no preflight);
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
