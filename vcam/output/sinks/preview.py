"""MJPEG preview over HTTP on 127.0.0.1: what the virtual camera shows, in any browser."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import cv2
import numpy as np
import uvicorn
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from vcam.control.api import RequestGuard

BOUNDARY = "fluxrtframe"

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>FluxRT Camera preview</title>
<style>body{background:#111;color:#ddd;font-family:sans-serif;text-align:center}img{max-width:96vw}</style>
</head><body><h3>FluxRT Camera</h3><img id="v" src="stream.mjpg" alt="preview">
<p><label><input type="checkbox" id="cells"> show the cells the spatial cache recomputed (red)</label></p>
<script>document.getElementById("cells").onchange=e=>{
 document.getElementById("v").src="stream.mjpg"+(e.target.checked?"?overlay=cells":"")}</script>
</body></html>"""
TINT = np.array([255, 40, 40], np.float32)  # recomputed cells, blended at 40%


def overlay_cells(frame: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`frame` with the recomputed token cells (16x16 pixels each) tinted red."""
    if mask is None or not mask.any():
        return frame
    h, w = frame.shape[:2]
    cells = np.kron(mask, np.ones((16, 16), bool))[:h, :w]
    out = frame.copy()
    out[cells] = (0.6 * out[cells] + 0.4 * TINT).astype(np.uint8)
    return out


class PreviewSink:
    """Keeps the newest frame as JPEG (encoded only while someone watches) and serves it."""

    def __init__(self, host: str, port: int, fps: float, quality: int = 80):
        self.fps, self.quality = fps, quality
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._jpeg: dict[bool, bytes] = {}  # overlay on/off -> JPEG of the newest frame
        self._version = 0
        self.watchers = 0
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))  # bound here so port 0 works and the URL is known at once
        self.url = f"http://{host}:{self._sock.getsockname()[1]}/"
        # the preview shows the camera: refuse requests naming another host (DNS rebinding) or coming
        # from another site's page, as the control API does
        app = RequestGuard(self._app(), limit=4096, local_only=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="preview", daemon=True)
        self._thread.start()

    @property
    def status(self) -> dict[str, Any]:
        return {"url": self.url, "watchers": self.watchers}

    def send(self, frame: np.ndarray, mask: np.ndarray | None = None) -> None:
        with self._cond:
            self._frame, self._mask = frame, mask
            self._jpeg = {}
            self._version += 1
            self._cond.notify_all()

    def _encode(self, overlay: bool = False) -> bytes | None:
        with self._cond:
            if overlay not in self._jpeg and self._frame is not None:
                img = overlay_cells(self._frame, self._mask) if overlay else self._frame
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if ok:
                    self._jpeg[overlay] = buf.tobytes()
            return self._jpeg.get(overlay)

    def _stream(self, overlay: bool) -> Iterator[bytes]:
        self.watchers += 1
        seen = -1
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._version != seen, timeout=1.0)
                    seen = self._version
                jpeg = self._encode(overlay)
                if jpeg is not None:
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                           .encode() + jpeg + b"\r\n")
                time.sleep(1.0 / self.fps)  # never faster than the camera
        finally:
            self.watchers -= 1

    def _app(self) -> FastAPI:
        app = FastAPI(title="FluxRT Camera preview", docs_url=None, redoc_url=None)

        @app.get("/", response_class=HTMLResponse)
        def page() -> str:
            return PAGE

        @app.get("/frame.jpg")
        def frame(overlay: Literal["none", "cells"] = "none") -> Response:
            jpeg = self._encode(overlay == "cells")
            if jpeg is None:
                return Response("no frame yet", status_code=503)
            return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

        @app.get("/stream.mjpg")
        def stream(overlay: Literal["none", "cells"] = "none") -> StreamingResponse:
            return StreamingResponse(self._stream(overlay == "cells"), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                     headers={"Cache-Control": "no-store"})

        return app

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=3)
        self._sock.close()
