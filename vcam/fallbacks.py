"""The camera never stops: what fails, what takes over, what `status` says, how it recovers.

`POLICY` is the whole policy as data; the functions below apply it (the inference worker and the
virtual-camera sink call them, nothing else substitutes). The README's "When something fails" table is
`policy_markdown()`, checked by tests/test_supervision.py. The `engine` package never falls back on its
own: its factories raise typed errors (`EngineConfigError`, `InterpolatorUnavailable`) and vcam decides here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from engine import Engine
    from engine.interp.base import Interpolator
    from vcam.config import Config

log = logging.getLogger(__name__)

# restarts of a child process: the first after BACKOFF_FIRST_S, doubling up to BACKOFF_MAX_S; a child that
# stayed up HEALTHY_AFTER_S starts again from the first delay
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 30.0
# a failed interpolation group is blended; the configured interpolator is tried again after this many groups
INTERP_RETRY_GROUPS = 10
CAMERA_RETRY_S = 5.0  # a virtual camera that cannot be opened is tried again this often


@dataclass(frozen=True)
class Fallback:
    failure: str  # what fails
    replacement: str  # what takes over
    status: str  # the status field that says so, and its text ({...}: filled in when it happens)
    recovery: str  # how it recovers


POLICY: dict[str, Fallback] = {
    "child_died": Fallback(
        "a child process dies (exception, crash, kill -9)",
        "inference: the camera repeats the last frame, then a status card saying the engine restarts; output: "
        "its warm standby takes over within a second",
        "`inference` / `output`: `restarts`, `last_error`: \"{why}\"",
        f"restarted after {BACKOFF_FIRST_S:g} s, doubling per crash up to {BACKOFF_MAX_S:g} s; back to "
        f"{BACKOFF_FIRST_S:g} s after {HEALTHY_AFTER_S:g} s up"),
    "child_hung": Fallback(
        "a child process hangs or is stopped: no heartbeat for `watchdog.timeout_s`",
        "killed (SIGKILL), then as when it dies",
        "`last_error`: \"no heartbeat for {silent} s (hung or stopped; limit {limit} s), killed\"",
        "as when it dies"),
    "source": Fallback(
        "the source fails: camera unplugged, unreadable file, frames of the wrong shape or type",
        "the camera repeats the last frame, then a status card with the reason",
        "`source.error` and the card: \"source error: {error}\"",
        "the source is reopened with backoff; the first good frame clears it"),
    "auto_engine": Fallback(
        "`engine.name = \"auto\"` without a CUDA GPU or without klein weights",
        "`flux2-tiny` (random weights)",
        "`engine_note`: \"{why}: using the tiny random-weight model\"",
        "restart on a GPU machine with `fluxrt-cam models download klein-4b`"),
    "auto_flux2_build": Fallback(
        "`engine.name = \"auto\"` chose `flux2`, but it fails to build",
        "`flux2-tiny`",
        "`engine_note`: \"flux2 unavailable ({error}); running the tiny model\"",
        "fix the cause named in the note, then restart the daemon"),
    "engine_build": Fallback(
        "the configured engine fails to build (bad option, missing weights, out of memory)",
        "`passthrough`: frames go out unedited",
        "`engine_error`: \"engine {name} failed to start: {error}; frames pass through unedited\"",
        "fix the cause named in the error, then restart the daemon"),
    "live_settings": Fallback(
        "a live setting cannot be applied (unreadable style image, cache options)",
        "the rest of the settings apply; the part that failed keeps its previous value",
        "`settings_error`: \"settings {version} not fully applied: {error}\"",
        "the next settings that apply clear it"),
    "edit": Fallback(
        "one frame's edit raises",
        "that frame is dropped; the previous output stays on the camera",
        "`edit_errors` (count), `last_edit_error`: \"{error}\"",
        "the next frame is edited as usual"),
    "interp_weights": Fallback(
        "RIFE weights missing or unusable",
        "`flow` (OpenCV, no weights)",
        "`interpolator_note`: \"interpolation: using flow instead of {method}: {reason}. Fix: {fix}\"",
        "put the weights in place, then change interpolation settings or restart"),
    "interp_build": Fallback(
        "no interpolator can be built at all",
        "`blend` (cross-fade)",
        "`interpolator_note`: \"interpolator failed ({error}); using blend\"",
        "the next interpolation settings build it again"),
    "interp_group": Fallback(
        "the interpolator raises on one group (e.g. out of GPU memory)",
        f"`blend` for that group and the next {INTERP_RETRY_GROUPS}",
        "`interp_errors` (count), `interpolator_note`: \"{name} failed ({error}); blend for now, retrying in "
        f"{INTERP_RETRY_GROUPS} groups\"",
        f"the configured interpolator is tried again after {INTERP_RETRY_GROUPS} groups; a success clears the note"),
    "virtual_camera": Fallback(
        "the virtual camera cannot be opened or goes away",
        "frames still reach the preview and recording; Windows: the OBS camera if Unity Capture fails",
        "output `sinks.virtual_camera.error`: the exact fix (e.g. the `modprobe` command)",
        f"opened again automatically every {CAMERA_RETRY_S:g} s"),
}


def policy_markdown() -> str:
    """The README's table."""
    rows = ["| What fails | What takes over | What `status` says | How it recovers |", "|---|---|---|---|"]
    rows += [f"| {f.failure} | {f.replacement} | {f.status} | {f.recovery} |" for f in POLICY.values()]
    return "\n".join(rows)


def status_text(key: str, **values: Any) -> str:
    """The status text of row `key`, filled in (the part in quotes)."""
    text = POLICY[key].status
    return text[text.index('"') + 1:text.rindex('"')].format(**values)


# ---- engine ------------------------------------------------------------------------------------------
@dataclass
class EngineBuild:
    engine: Engine
    note: str | None = None  # a fallback that works as intended (auto -> tiny)
    error: str | None = None  # the configured engine failed: frames pass through


def build_engine(cfg: Config, on_phase: Callable[[str], None] | None = None) -> EngineBuild:
    """The engine the config asks for, or what the policy puts in its place; never raises. `on_phase(text)`
    hears the slow stages of a FLUX.2 build (tiny model build, weights, set-up) for the start-up progress."""
    from engine import PassthroughEngine, create_engine
    from vcam.inference.engine_choice import auto_engine, engine_options

    name, why = auto_engine(cfg.engine)
    auto = cfg.engine.name == "auto"
    note = why if auto and name == "flux2-tiny" else None  # auto_engine words it after POLICY["auto_engine"]
    if name == "passthrough":
        return EngineBuild(PassthroughEngine(), note)
    options = engine_options(cfg)
    try:
        return EngineBuild(create_engine(name, options, on_phase=on_phase), note)
    except Exception as e:  # noqa: BLE001 - any build failure keeps the camera alive
        if auto and name == "flux2":
            log.warning("flux2 unavailable (%s); using the tiny model", e)
            try:
                return EngineBuild(create_engine("flux2-tiny", options, on_phase=on_phase),
                                   status_text("auto_flux2_build", error=e))
            except Exception as e2:  # noqa: BLE001
                e = e2
        log.error("engine %s failed to start: %s", name, e)
        return EngineBuild(PassthroughEngine(), note, status_text("engine_build", name=name, error=e))


# ---- interpolation -----------------------------------------------------------------------------------
def build_interpolator(method: str, factor: int, model_path: Path | str | None, device: str,
                       models_dir: Path) -> tuple[Interpolator | None, str | None]:
    """(interpolator, note); (None, None) when interpolation is off. Never raises."""
    if method == "none" or factor <= 1:
        return None, None
    from engine.interp import InterpolatorUnavailable, create_interpolator

    try:
        return create_interpolator(method, device=device, model_path=Path(model_path) if model_path else None,
                                   models_dir=models_dir.expanduser()), None
    except InterpolatorUnavailable as e:
        from engine.interp.flow import FlowInterpolator

        log.warning("%s", e)
        return FlowInterpolator(), status_text("interp_weights", method=e.method, reason=e.reason, fix=e.fix)
    except Exception as e:  # noqa: BLE001 - even flow failed: blend is always possible
        from engine.interp.blend import BlendInterpolator

        log.error("interpolator %s failed: %s", method, e)
        return BlendInterpolator(), status_text("interp_build", error=e)


class GuardedInterpolator:
    """The configured interpolator, with blend standing in for groups where it raises, and retried after
    INTERP_RETRY_GROUPS groups (a transient error, e.g. a momentary out-of-memory, must not demote it)."""

    def __init__(self, interp: Interpolator, note: str | None = None):
        from engine.interp.blend import BlendInterpolator

        self.interp, self.note = interp, note
        self._build_note = note  # what building it said (e.g. flow instead of rife): back after a recovery
        self._blend = BlendInterpolator()
        self.errors = 0
        self.last_error: str | None = None
        self._skip = 0  # groups left to blend before the next try
        self._failing = False

    @property
    def name(self) -> str:
        return self.interp.name

    def interpolate(self, a: Tensor, b: Tensor, ts: list[float]) -> list[Tensor]:
        if self._skip > 0:
            self._skip -= 1
            return self._blend.interpolate(a, b, ts)
        try:
            frames = self.interp.interpolate(a, b, ts)
        except Exception as e:  # noqa: BLE001 - e.g. out of GPU memory in RIFE: blend this group, say so
            log.exception("interpolation failed")
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self.note = status_text("interp_group", name=self.interp.name, error=self.last_error)
            self._skip, self._failing = INTERP_RETRY_GROUPS, True
            return self._blend.interpolate(a, b, ts)
        if self._failing:  # recovered
            self._failing, self.note = False, self._build_note
        return frames
