"""The WebSocket side of the control API: a hub that fans settings changes out to every connected
client, and the per-connection loop that pushes settings on change and status at an interval."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from vcam.messages import Settings

log = logging.getLogger(__name__)


class WsClient:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.latest: Settings | None = None  # only the newest change matters to a client
        self.changed = asyncio.Event()

    def push(self, settings: Settings) -> None:
        self.latest = settings
        self.changed.set()


class Hub:
    """A ControlState listener: changes arrive on any thread and are handed to each client's event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: set[WsClient] = set()

    def add(self, c: WsClient) -> None:
        with self._lock:
            self._clients.add(c)

    def remove(self, c: WsClient) -> None:
        with self._lock:
            self._clients.discard(c)

    def __call__(self, settings: Settings) -> None:
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            try:
                c.loop.call_soon_threadsafe(c.push, settings)
            except RuntimeError:  # its event loop is closed: the server stopped
                self.remove(c)

    async def serve(self, websocket: WebSocket, settings: Callable[[], dict[str, Any]],
                    status: Callable[[], dict[str, Any]], settings_json: Callable[[Settings], dict[str, Any]],
                    status_interval_s: float) -> None:
        """One accepted connection until the client leaves: the current settings and status first, then
        {"type": "settings"} on every change and {"type": "status"} every `status_interval_s`."""
        client = WsClient(asyncio.get_running_loop())
        self.add(client)

        async def reader() -> None:  # only to notice the client leaving; incoming messages are ignored
            while True:
                await websocket.receive_text()

        async def writer() -> None:
            await websocket.send_json({"type": "settings", "settings": settings()})
            await websocket.send_json({"type": "status", "status": await run_in_threadpool(status)})
            next_status = time.monotonic() + status_interval_s
            while True:
                try:
                    await asyncio.wait_for(client.changed.wait(), max(0.0, next_status - time.monotonic()))
                except TimeoutError:
                    pass
                if client.changed.is_set():
                    client.changed.clear()
                    if client.latest is not None:
                        await websocket.send_json({"type": "settings", "settings": settings_json(client.latest)})
                if time.monotonic() >= next_status:
                    await websocket.send_json({"type": "status", "status": await run_in_threadpool(status)})
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
            self.remove(client)
