"""Inference process: INPUT -> engine.edit -> interpolator -> OUTPUT (a group of k frames).

The only process that touches the GPU. It never stops the camera: an engine that cannot be built
is reported in status and the frames pass through unedited; an interpolator that cannot be built
falls back to `flow` (then `blend`) and says so.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine import Engine, PassthroughEngine, create_engine
from engine.interp.base import Interpolator, timesteps
from vcam.supervisor.child import STOP, Links, drain, parent_alive, report, run_child
from vcam.config import Config
from vcam.messages import Settings
from vcam.inference.engine_choice import auto_engine, engine_options
from vcam.shm import FrameChannel, FrameMeta

log = logging.getLogger(__name__)
STATUS_EVERY_S = 0.5


def build_engine(cfg: Config) -> tuple[Engine, str | None, str | None]:
    """(engine, note, error). On failure the passthrough engine and the error, so frames keep flowing."""
    name, why = auto_engine(cfg.engine)
    note = why if cfg.engine.name == "auto" and name == "flux2-tiny" else None
    if name == "passthrough":
        return PassthroughEngine(), note, None
    options = engine_options(cfg)
    try:
        return create_engine(name, **options), note, None
    except Exception as e:  # noqa: BLE001 - any build failure keeps the camera alive
        if cfg.engine.name == "auto" and name == "flux2":
            log.warning("flux2 unavailable (%s); using the tiny model", e)
            try:
                return create_engine("flux2-tiny", **options), f"flux2 unavailable ({e}); running the tiny model", None
            except Exception as e2:  # noqa: BLE001
                e = e2
        log.error("engine %s failed to start: %s", name, e)
        return PassthroughEngine(), note, f"engine {name} failed to start: {e}; frames pass through unedited"


def build_interpolator(method: str, factor: int, model_path: str | None, device: str,
                       models_dir: Path) -> tuple[Interpolator | None, str | None]:
    if method == "none" or factor <= 1:
        return None, None
    from engine.interp import create_interpolator

    return create_interpolator(method, device=device, model_path=Path(model_path) if model_path else None,
                               models_dir=models_dir.expanduser())


class InferenceWorker:
    def __init__(self, cfg: Config, links: Links):
        self.cfg, self.links = cfg, links
        self.input = FrameChannel.attach(links.input)
        self.output = FrameChannel.attach(links.output)
        self.settings: Settings | None = None
        self.engine: Engine = PassthroughEngine()
        self.engine_note: str | None = None
        self.engine_error: str | None = None
        self.settings_error: str | None = None
        self.interp: Interpolator | None = None
        self.interp_key: tuple | None = None
        self.interp_note: str | None = None
        self.prev_out: np.ndarray | None = None
        self.group = 0
        self.frames = 0
        self.errors = 0
        self.last_error: str | None = None
        self.interval = 0.0  # engine output interval, moving average
        self.last_out_ts: float | None = None
        self.edit_ms = 0.0

    def device(self) -> str:
        dev = getattr(self.engine, "device", None)
        return str(dev) if dev is not None else "cpu"

    def apply(self, s: Settings) -> None:
        self.settings = s
        try:
            if hasattr(self.engine, "configure_cache"):
                self.engine.configure_cache(s.cache)  # type: ignore[attr-defined]
            if hasattr(self.engine, "set_style_reference"):
                self.engine.set_style_reference(s.style_reference)  # type: ignore[attr-defined]
            self.settings_error = None
        except Exception as e:  # noqa: BLE001 - e.g. an unreadable style image: keep editing as before
            self.settings_error = f"settings {s.prompt_version} not fully applied: {e}"
            log.error("%s", self.settings_error)
        it = s.interpolation
        key = (it.get("method"), it.get("factor"), it.get("model_path"))
        if key != self.interp_key:
            self.interp_key = key
            try:
                self.interp, self.interp_note = build_interpolator(key[0], key[1], key[2], self.device(),
                                                                   self.cfg.engine.models_dir)
            except Exception as e:  # noqa: BLE001 - even flow failed: blend is always possible
                from engine.interp.blend import BlendInterpolator

                self.interp, self.interp_note = BlendInterpolator(), f"interpolator failed ({e}); using blend"
            self.prev_out = None

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {
            "phase": "running",
            "engine": getattr(self.engine, "name", type(self.engine).__name__),
            "engine_note": self.engine_note,
            "engine_error": self.engine_error,
            "settings_error": self.settings_error,
            "mode": s.mode if s else None,
            "prompt_version": s.prompt_version if s else None,
            "frames": self.frames,
            "edit_errors": self.errors,
            "last_edit_error": self.last_error,
            "engine_fps": 1.0 / self.interval if self.interval > 0 else 0.0,
            "edit_ms": self.edit_ms,
            "stages_ms": dict(self.engine.stats.stages_ms),
            "cache": dict(self.engine.stats.cache),
            "interpolator": getattr(self.interp, "name", None),
            "interpolator_note": self.interp_note,
            "factor": (s.interpolation.get("factor", 1) if s else 1) if self.interp else 1,
        }

    def run(self) -> None:
        report(self.links, "inference", {"phase": "building engine"})
        self.engine, self.engine_note, self.engine_error = build_engine(self.cfg)
        next_report = 0.0
        while parent_alive():
            for msg in drain(self.links.control):
                if msg == STOP:
                    return
                if isinstance(msg, Settings):
                    self.apply(msg)
            now = time.monotonic()
            if now >= next_report:
                report(self.links, "inference", self.status())
                next_report = now + STATUS_EVERY_S
            if not self.links.input_bell.wait(min(0.25, max(0.0, next_report - now))):
                continue
            got = self.input.read_latest()
            if got is None or self.settings is None or self.settings.mode == "paused":
                continue
            self.process(*got)

    def process(self, frame: np.ndarray, meta: FrameMeta) -> None:
        s = self.settings
        assert s is not None
        t0 = time.monotonic()
        if s.mode == "passthrough":
            out = frame
        else:
            try:
                out = self.engine.edit(frame, prompt=s.prompt, seed=s.seed, steps=s.steps)
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the stream
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("edit failed")
                return
        group: list[np.ndarray] = []
        if self.interp is not None and self.prev_out is not None and self.prev_out.shape == out.shape:
            factor = int(s.interpolation.get("factor", 1))
            try:
                group = self.interp.interpolate(self.prev_out, out, timesteps(factor))
            except Exception as e:  # noqa: BLE001 - e.g. out of GPU memory in RIFE: blend, and say so
                from engine.interp.blend import BlendInterpolator

                log.exception("interpolation failed")
                self.interp = BlendInterpolator()
                self.interp_note = f"{self.interp_key[0]} failed ({type(e).__name__}: {e}); using blend"
                group = self.interp.interpolate(self.prev_out, out, timesteps(factor))
        group.append(out)
        self.prev_out = out
        done = time.monotonic()
        self.edit_ms = (done - t0) * 1000
        if self.last_out_ts is not None:
            dt = done - self.last_out_ts
            self.interval = dt if self.interval == 0 else self.interval + 0.2 * (dt - self.interval)
        self.last_out_ts = done
        self.group += 1
        mask = self.engine.last_mask if s.mode == "live" else None  # the cells the spatial cache recomputed
        for i, f in enumerate(group):
            self.output.write(f, FrameMeta(meta.frame_id, meta.capture_ts, s.prompt_version, self.group, i,
                                           len(group), self.interval, mask=mask))
        self.links.output_bell.ring()
        self.frames += 1


def inference_main(cfg: Config, links: Links) -> None:
    run_child("inference", links, cfg.log_level, lambda: InferenceWorker(cfg, links).run())
