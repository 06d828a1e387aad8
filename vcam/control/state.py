"""The daemon's live settings (prompt, preset, seed, steps, mode, cache, interpolation).

Lives in the supervisor process. Every change makes a new immutable `Settings` with a higher
`prompt_version` and tells the listeners (the supervisor forwards it to the inference process; the
API pushes it to WebSocket clients; the OBS bridge updates its text source).
"""
from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from engine.options import CacheOptions, InterpolationOptions, Options, Seed, Steps
from vcam.config import Config, Preset, format_errors
from vcam.messages import Mode, Settings
from vcam.prompt_text import control_character_problem

Listener = Callable[[Settings], None]


class LiveSettings(Options):
    """What `ControlState.update` changes, validated as the config validates it: one validation, and its
    errors name the key as a config file would (`cache.tau`, `steps`) with the declared bounds."""

    seed: Seed
    steps: Steps
    cache: CacheOptions
    interpolation: InterpolationOptions


class ControlError(ValueError):
    """A request that cannot be applied; the message says why and what is allowed."""


class PresetConflict(ControlError):
    """A preset that cannot be added as asked: its name is taken (or reads as an index or a keyword), or
    the list is full. The request itself was well-formed (the API answers 409, not 422)."""


MAX_PRESETS = 100  # presets added at run time live in memory: a runaway client must not grow it forever
_KEYWORDS = ("next", "prev", "previous")  # what apply_preset reads as a step, never as a name


class ControlState:
    def __init__(self, cfg: Config):
        # one lock for reading, changing and announcing: listeners (quick: they queue or wake) then
        # see the versions in order, and a change computed from the current settings is not lost
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self.presets: list[Preset] = list(cfg.presets)
        self.max_prompt_length = cfg.control.max_prompt_length
        start = self._find(cfg.prompt.preset) if cfg.prompt.preset else None
        self._settings = Settings(
            prompt_version=1,
            prompt=start.prompt if start else cfg.prompt.text,
            seed=start.seed if start and start.seed is not None else cfg.engine.seed,
            steps=start.steps if start and start.steps is not None else cfg.engine.steps,
            preset=start.name if start else None,
            style_reference=str(start.style_reference) if start and start.style_reference else (
                str(cfg.engine.style_reference) if cfg.engine.style_reference else None),
            cache=cfg.cache,
            interpolation=cfg.interpolation,
        )
        # what a preset without seed / steps / style falls back to: the engine's configuration
        self._defaults = (cfg.engine.seed, cfg.engine.steps,
                          str(cfg.engine.style_reference) if cfg.engine.style_reference else None)

    # ---- reading -------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self._settings

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # ---- changing ------------------------------------------------------------------------------
    def _commit(self, **changes: Any) -> Settings:
        with self._lock:
            new = dataclasses.replace(self._settings, prompt_version=self._settings.prompt_version + 1, **changes)
            self._settings = new
            for listener in list(self._listeners):
                listener(new)
        return new

    def set_prompt(self, prompt: str) -> Settings:
        # every way in (API, OBS bridge) ends here; checked before strip(), which would hide \x1c-\x1f at the ends
        problem = control_character_problem(prompt)
        if problem:
            raise ControlError(f"prompt {problem}")
        prompt = prompt.strip()
        if not prompt:
            raise ControlError("prompt is empty; send a non-empty text")
        if len(prompt) > self.max_prompt_length:
            raise ControlError(f"prompt has {len(prompt)} characters; the limit is {self.max_prompt_length}")
        return self._commit(prompt=prompt, preset=None)

    def _find(self, ref: str | int) -> Preset:
        # isascii: "²".isdigit() is true, but int("²") raises - such a name is a name, not a number
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
            # numbered from 1 everywhere a person sees a number: CLI, API, hotkeys, the page, OBS
            n, count = int(ref), len(self.presets)
            if not 1 <= n <= count:
                there = f"there are {count} presets, 1-{count}" if count else "no presets are configured"
                raise ControlError(f"preset {n} out of range: {there}")
            return self.presets[n - 1]
        for p in self.presets:
            if p.name == ref:
                return p
        names = ", ".join(p.name for p in self.presets) or "(none configured)"
        raise ControlError(f"no preset named {ref!r}; presets: {names}")

    def apply_preset(self, ref: str | int) -> Settings:
        """Apply a preset by name, number (1 = the first), or 'next' / 'prev'."""
        with self._lock:  # 'next' is relative to the current preset
            return self._apply_preset(ref)

    def _apply_preset(self, ref: str | int) -> Settings:
        if ref in _KEYWORDS:
            if not self.presets:
                raise ControlError("no presets configured; add [[presets]] to the config")
            names = [p.name for p in self.presets]
            cur = names.index(self._settings.preset) if self._settings.preset in names else -1
            step = 1 if ref == "next" else -1
            if cur < 0 and step < 0:
                cur = 0
            preset = self.presets[(cur + step) % len(self.presets)]
        else:
            preset = self._find(ref)
        seed, steps, style = self._defaults
        return self._commit(
            prompt=preset.prompt,
            preset=preset.name,
            seed=preset.seed if preset.seed is not None else seed,
            steps=preset.steps if preset.steps is not None else steps,
            style_reference=str(preset.style_reference) if preset.style_reference else style,
        )

    def update(self, *, seed: int | None = None, steps: int | None = None, mode: Mode | None = None,
               cache: dict[str, Any] | None = None, interpolation: dict[str, Any] | None = None) -> Settings:
        """Change any of seed, steps, mode, cache or interpolation settings (validated as in the config)."""
        changes: dict[str, Any] = {k: v for k, v in (("seed", seed), ("steps", steps)) if v is not None}
        if mode is not None:
            if mode not in ("live", "passthrough", "paused"):
                raise ControlError(f"mode {mode!r}; allowed: live, passthrough, paused")
            changes["mode"] = mode
        with self._lock:  # merged into the current cache / interpolation settings
            cur = self._settings
            interp = {**cur.interpolation.model_dump(), **(interpolation or {})}
            if interpolation and "factor" in interpolation:
                interp["exp"] = None  # an explicit factor replaces the exp it came from
            try:
                live = LiveSettings.model_validate({
                    "seed": changes.get("seed", cur.seed), "steps": changes.get("steps", cur.steps),
                    "cache": {**cur.cache.model_dump(), **(cache or {})}, "interpolation": interp})
            except ValidationError as e:
                raise ControlError("; ".join(format_errors(e, LiveSettings))) from None
            if cache is not None:
                changes["cache"] = live.cache
            if interpolation is not None:
                changes["interpolation"] = live.interpolation
            if not changes:
                raise ControlError("nothing to change")
            return self._commit(**changes)

    def add_preset(self, preset: Preset, *, replace: bool = False, apply: bool = False) -> Preset:
        """Add `preset` (validated as a config preset) to the running daemon's list, or with `replace` put it
        in place of the one of that name; returns it as kept (name and prompt stripped). Kept until the
        daemon stops (the config file is not written). With `apply` it is applied too."""
        name, prompt = preset.name.strip(), preset.prompt.strip()
        if not name or not prompt:
            raise ControlError("a preset needs a name and a prompt that are not only whitespace")
        if len(prompt) > self.max_prompt_length:
            raise ControlError(f"prompt has {len(prompt)} characters; the limit is {self.max_prompt_length}")
        if name.isdigit() or name in _KEYWORDS:
            # apply_preset would read it as an index or a step: such a preset could not be chosen by name
            raise PresetConflict(f"preset name {name!r} reads as a number or as next/prev; choose another name")
        preset = preset.model_copy(update={"name": name, "prompt": prompt})
        with self._lock:
            names = [p.name for p in self.presets]
            if name in names and not replace:
                raise PresetConflict(f"a preset named {name!r} exists; choose another name or replace it")
            if name not in names and len(self.presets) >= MAX_PRESETS:
                raise PresetConflict(f"there are {len(self.presets)} presets, the most a daemon keeps")
            # a new list, not an append: readers (status, OBS bridge) iterate the old one without the lock
            presets = list(self.presets)
            if name in names:
                presets[names.index(name)] = preset
            else:
                presets.append(preset)
            self.presets = presets
            if apply:
                self._apply_preset(name)
        return preset
