"""Inference process: INPUT -> engine.edit -> interpolator -> OUTPUT (a group of k frames).

The only process that touches the GPU. Frames stay on the engine's device from the engine through the
interpolator; each output frame is copied to the host once, straight into its OUTPUT slot (host_copy.py).
It never stops the camera: what happens when something fails is vcam/fallbacks.py's POLICY.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from engine import Engine, PassthroughEngine
from engine.interp.base import timesteps
from vcam.config import Config
from vcam.fallbacks import GuardedInterpolator, build_engine, build_interpolator, status_text
from vcam.inference.host_copy import HostCopy
from vcam.messages import Settings
from vcam.shm import FrameChannel, FrameMeta
from vcam.supervisor.child import STOP, Links, drain, parent_alive, report, run_child
from vcam.supervisor.heartbeat import Pulse

log = logging.getLogger(__name__)
STATUS_EVERY_S = 0.5


class InferenceWorker:
    def __init__(self, cfg: Config, links: Links, pulse: Pulse | None = None):
        self.cfg, self.links = cfg, links
        self.pulse = pulse or Pulse()
        self.warm = False  # the first edit after a build may compile: it runs under a STARTING heartbeat
        self.input = FrameChannel.attach(links.input)
        self.output = FrameChannel.attach(links.output)
        self.settings: Settings | None = None
        self.engine: Engine = PassthroughEngine()
        self.engine_note: str | None = None
        self.engine_error: str | None = None
        self.settings_error: str | None = None
        self.interp: GuardedInterpolator | None = None
        self.interp_key: tuple | None = None
        self.prev_out: torch.Tensor | None = None  # the last engine frame, on the engine's device
        self.host_copy = HostCopy(self.output)
        self.group = 0
        self.frames = 0
        self.errors = 0
        self.last_error: str | None = None
        self.interval = 0.0  # engine output interval, moving average
        self.last_out_ts: float | None = None
        self.edit_ms = 0.0

    def apply(self, s: Settings) -> None:
        self.settings = s
        problems = []
        for change, value in ((self.engine.configure_cache, s.cache), (self.engine.set_style_reference,
                                                                        s.style_reference)):
            try:  # each live change on its own: one that fails keeps its previous value, the others apply
                change(value)
            except Exception as e:  # noqa: BLE001 - e.g. an unreadable style image: keep editing as before
                problems.append(str(e))
        self.settings_error = (status_text("live_settings", version=s.prompt_version, error="; ".join(problems))
                               if problems else None)
        if problems:
            log.error("%s", self.settings_error)
        it = s.interpolation
        key = (it.method, it.factor, it.model_path)
        if key != self.interp_key:
            self.interp_key = key
            if it.method != "none" and it.factor > 1:  # otherwise there is nothing to load
                self.say("loading the interpolator")
            with self.pulse.starting():  # loads weights
                interp, note = build_interpolator(key[0], key[1], key[2], str(self.engine.device),
                                                  self.cfg.engine.models_dir)
            self.interp = GuardedInterpolator(interp, note) if interp is not None else None
            self.prev_out = None

    def phase(self) -> str:
        # a frame went through (or its edit failed, and `last_edit_error` says why): the engine serves
        return "running" if self.frames or self.errors else "waiting for the first frame"

    def say(self, phase: str) -> None:
        """Report a start-up `phase` now (the status reports of `serve` pause while slow work runs). Once
        serving, a phase would hide that it runs, and a bare phase would blank the other fields until the
        next report: only before the first frame, and with the rest of the status."""
        if self.phase() != "running":
            report(self.links, "inference", {**self.status(), "phase": phase})

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {
            "phase": self.phase(),
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
            "interpolator": self.interp.name if self.interp else None,
            "interpolator_note": self.interp.note if self.interp else None,
            "interp_errors": self.interp.errors if self.interp else 0,
            "last_interp_error": self.interp.last_error if self.interp else None,
            "host_copy": self.host_copy.mode,
            "factor": s.interpolation.factor if s and self.interp else 1,
        }

    def run(self) -> None:
        report(self.links, "inference", {"phase": "building the engine"})
        def on_phase(phase: str) -> None:  # the engine's own stages (tiny model build, weights, set-up)
            report(self.links, "inference", {"phase": phase})

        with self.pulse.starting():  # loading weights, building, compiling: slow, not hung
            built = build_engine(self.cfg, on_phase)
        self.engine, self.engine_note, self.engine_error = built.engine, built.note, built.error
        self.engine.on_progress = self.pulse.beat  # a long edit beats between its steps
        try:
            self.serve()
        finally:
            self.host_copy.close()  # unlock the OUTPUT segment (CUDA) whichever way the loop ends

    def serve(self) -> None:
        next_report = 0.0
        while parent_alive():
            self.pulse.beat()
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
            with self.pulse.busy():  # an edit on a loaded CPU can take seconds: slow is not hung
                self.process(*got)

    def process(self, frame: np.ndarray, meta: FrameMeta) -> None:
        s = self.settings
        assert s is not None
        t0 = time.monotonic()
        mask = None
        if s.mode == "passthrough":
            out = torch.from_numpy(frame)
        else:
            try:
                if self.warm:
                    result = self.engine.edit(frame, prompt=s.prompt, seed=s.seed, steps=s.steps)
                else:
                    if not isinstance(self.engine, PassthroughEngine):  # nothing to warm up there
                        self.say("compiling (first frame)" if self.cfg.engine.compile else "warming up (first frame)")
                    with self.pulse.starting():  # compiles and allocates on the first call
                        result = self.engine.edit(frame, prompt=s.prompt, seed=s.seed, steps=s.steps)
                    self.warm = True
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the stream
                self.errors += 1
                self.last_error = status_text("edit", error=f"{type(e).__name__}: {e}")
                log.exception("edit failed")
                return
            out = result.frame
            mask = result.mask if s.mode == "live" else None  # the cells the spatial cache recomputed
        group = self.group_frames(out, s.interpolation.factor)
        self.prev_out = out
        done = time.monotonic()
        self.edit_ms = (done - t0) * 1000
        if self.last_out_ts is not None:
            dt = done - self.last_out_ts
            self.interval = dt if self.interval == 0 else self.interval + 0.2 * (dt - self.interval)
        self.last_out_ts = done
        self.group += 1
        self.pulse.beat()
        for i, f in enumerate(group):
            fm = FrameMeta(meta.frame_id, meta.capture_ts, s.prompt_version, self.group, i, len(group),
                           self.interval, mask=mask)
            with self.output.writing(fm) as slot:
                self.host_copy.copy(f, slot)  # the frame's one device -> host copy
        self.links.output_bell.ring()
        self.frames += 1

    def group_frames(self, out: torch.Tensor, factor: int) -> list[torch.Tensor]:
        """The in-between frames from the previous engine frame to `out`, then `out`; all on the device."""
        prev = self.prev_out
        if self.interp is None or prev is None or prev.shape != out.shape or prev.device != out.device:
            return [out]
        return self.interp.interpolate(prev, out, timesteps(factor)) + [out]


def inference_main(cfg: Config, links: Links, pulse: Pulse) -> None:
    run_child("inference", links, cfg.log_level, lambda: InferenceWorker(cfg, links, pulse).run())
