"""The daemon: wires source, supervisor (inference + output processes), control server and OBS bridge.

    capture thread -> INPUT -> inference process -> OUTPUT -> output process -> virtual camera / file
                                                           -> stream source -> control server /stream.mjpg
    control server, OBS bridge -> ControlState -> settings to the children
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from vcam.supervisor.capture import CaptureThread
from vcam.config import Config
from vcam.control.state import ControlState
from vcam.fallbacks import status_text
from vcam.sources import open_source
from vcam.supervisor.supervisor import Supervisor

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.state = ControlState(cfg)
        self.supervisor: Supervisor | None = None
        self.capture: CaptureThread | None = None
        self.api: Any = None
        self.stream: Any = None
        self.bridge: Any = None
        self.started_at = 0.0
        self._stopped = threading.Event()

    def start(self) -> None:
        cfg = self.cfg
        self.started_at = time.monotonic()
        self.supervisor = Supervisor(cfg)
        try:
            self.supervisor.start(self.state.settings)
            self.state.subscribe(self.supervisor.push)
            sup = self.supervisor
            self.capture = CaptureThread(open_source(cfg.source), sup.input, sup.input_bell, cfg.source.fps,
                                         paced=cfg.source.kind != "webcam", fit=cfg.output.fit,
                                         # the reason is on the status cards, where the user looks
                                         on_error=lambda e: sup.notice(status_text("source", error=e) if e else None, "source"))
            self.capture.start()
            self.capture.pause(self.state.settings.mode == "paused")
            self.state.subscribe(lambda s: self.capture.pause(s.mode == "paused") if self.capture else None)
            if cfg.control.enabled:
                from vcam.control.server import start_api_server

                if cfg.output.preview:
                    from vcam.control.stream import StreamSource

                    # its own reader of OUTPUT: the stream does not depend on the output process
                    self.stream = StreamSource(sup.output.spec, cfg.output.fps, cfg.output.stall_timeout_s,
                                               notice=lambda: sup.notice_text).start()
                    # the page's input view: a reader of INPUT with its own cursor, served at /input.jpg
                    self.stream.input = StreamSource(sup.input.spec, cfg.source.fps, cfg.output.stall_timeout_s,
                                                     notice=lambda: sup.notice_text).start()
                    for view in (self.stream, self.stream.input):
                        view.set_mode(self.state.settings.mode)
                        self.state.subscribe(lambda s, view=view: view.set_mode(s.mode))
                self.api = start_api_server(cfg.control, self.state, self.status, self.stream)
            if cfg.obs.enabled:
                from vcam.obs.bridge import ObsBridge

                self.bridge = ObsBridge(cfg.obs, cfg.scenes, self.state)
                self.bridge.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        inputs = self.stream.input if self.stream is not None else None
        for part in (self.bridge, self.api, self.stream, inputs, self.capture):  # the readers before the channels go
            if part is not None:
                try:
                    part.stop()
                except Exception:  # noqa: BLE001 - keep stopping the rest
                    log.exception("stopping %s failed", type(part).__name__)
        if self.capture is not None:
            self.capture.join(timeout=2)
        if self.supervisor is not None:
            self.supervisor.stop()

    def status(self) -> dict[str, Any]:
        s = self.state.settings
        children = self.supervisor.status() if self.supervisor else {}
        out = children.get("output", {})
        url = getattr(self.api, "url", None)
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "settings": {"prompt": s.prompt, "prompt_version": s.prompt_version, "preset": s.preset, "seed": s.seed,
                         "steps": s.steps, "mode": s.mode, "style_reference": s.style_reference,
                         "cache": s.cache.model_dump(mode="json"),
                         "interpolation": s.interpolation.model_dump(mode="json")},
            "presets": [p.name for p in self.state.presets],
            "source": {"kind": self.cfg.source.kind, **(self.capture.status if self.capture else {})},
            "inference": children.get("inference", {}),
            "output": out,
            # the page that shows the stream, and the stream itself (MJPEG: a browser, VLC, an OBS media source)
            "preview_url": f"{url}/" if url and self.stream else None,
            "stream_url": f"{url}/stream.mjpg" if url and self.stream else None,
            "input_url": f"{url}/input.jpg" if url and self.stream else None,  # what the source sends
            "stream": self.stream.status if self.stream is not None else {"enabled": False},
            "control_url": url,
            "obs": self.bridge.status() if self.bridge is not None else {"enabled": False},
        }

    def run_forever(self, duration: float | None = None, stop: threading.Event | None = None) -> None:
        """Run until `stop` is set (by default: SIGINT/SIGTERM) or `duration` seconds pass, then stop."""
        restore = None
        if stop is None:
            stop = threading.Event()
            restore = stop_on_signals(stop)
        try:
            stop.wait(duration)
        finally:
            if restore:
                restore()
            self.stop()


def stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set `stop` on SIGINT/SIGTERM; returns a function that restores the previous handlers."""

    def _handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    old = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore
