"""Daemon configuration: TOML file -> typed, validated models.

[engine], [cache] and [interpolation] are the engine's own option types (engine/options.py), so their
defaults and bounds are written once; tests/test_single_source.py holds default.toml and the README to them.

Every problem in a file is reported at once, one line each, naming the key, the value and what is
allowed (`ConfigError.lines`). The CLI prints them and exits with status 2 before anything starts.
"""
from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from engine.image import Fit
from engine.options import CacheOptions, InterpolationOptions, ModelOptions, Options, Seed, Steps, describe_errors
from engine.registry import ENGINE_NAMES
from vcam.prompt_text import LabelText, PromptText


# Sections are engine.options models: the engine owns the defaults and bounds of [engine], [cache] and
# [interpolation]; vcam adds only what is its own (the engine's name). The base is shared too, so every
# section forbids unknown keys and takes a number given for a text key as text (`--set source.webcam=1`).
_Section = Options
CacheConfig = CacheOptions
InterpolationConfig = InterpolationOptions


class EngineConfig(ModelOptions):
    # "auto": flux2 with CUDA and weights, else flux2-tiny (vcam.inference.engine_choice)
    name: Literal[("auto", *ENGINE_NAMES)] = "auto"  # type: ignore[valid-type]


class SourceConfig(_Section):
    kind: Literal["synthetic", "webcam", "file"] = "synthetic"
    webcam: str = "0"  # index or device path
    path: Path | None = None  # video file, looped
    fps: float = Field(30.0, gt=0, le=240)
    capture_width: int = Field(1280, ge=16, le=7680)
    capture_height: int = Field(720, ge=16, le=4320)
    dynamic_fraction: float = Field(0.1, ge=0.0, le=1.0)  # synthetic: area fraction that moves
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _file_needs_path(self) -> "SourceConfig":
        if self.kind == "file" and self.path is None:
            raise ValueError("kind = 'file' needs path = '<video file>'")
        return self


class OutputConfig(_Section):
    # what the virtual camera, the recording and the status cards get; 16:9 as calls expect. Even sides: the
    # camera backends convert to 4:2:0 YUV (I420, NV12), which halves both. Up to 4K UHD either way round
    width: int = Field(1280, ge=32, le=3840, multiple_of=2, strict=True)
    height: int = Field(720, ge=32, le=3840, multiple_of=2, strict=True)
    fps: float = Field(30.0, gt=0, le=240)
    fit: Fit = "crop"  # how a picture of another aspect fills the frame (source -> engine, engine -> camera)
    stall_timeout_s: float = Field(2.0, gt=0, le=600)
    virtual_camera: Literal["auto", "on", "off"] = "auto"
    camera_label: str = Field("FluxRT Camera", min_length=1, max_length=31)
    camera_backend: str | None = None  # force a pyvirtualcam backend (tests register one)
    preview: bool = True  # serve what the camera shows at /stream.mjpg on the control server
    record_path: Path | None = None

    @field_validator("record_path")
    @classmethod
    def _record_folder_exists(cls, path: Path | None) -> Path | None:
        # checked here, before anything starts, and never created: a typo must not leave folders behind,
        # and a recording that silently goes nowhere is found out only after the stream
        if path is None:
            return None
        folder = path.expanduser().parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise PydanticCustomError("record_folder",
                                      f"folder {folder} {what}; create it first or choose another path")
        return path

    @model_validator(mode="before")
    @classmethod
    def _retired_preview_address(cls, data: Any) -> Any:
        # the preview had its own server until the control server took it over: say so, not just "unknown key"
        old = [k for k in ("preview_host", "preview_port") if isinstance(data, dict) and k in data]
        if old:
            raise ValueError(f"output.{' and output.'.join(old)}: no longer used, the stream is served by the control "
                             f"server at http://<control.host>:<control.port>/stream.mjpg; remove "
                             f"{' and '.join(old)} from [output] (set control.host / control.port instead)")
        return data


class WatchdogConfig(_Section):
    # a child whose heartbeat stops this long is killed (SIGKILL) and restarted: hung, deadlocked, stopped
    timeout_s: float = Field(3.0, ge=0.5, le=600)
    # the longer silence allowed while a child starts (interpreter, imports, model loading, first edit)
    start_timeout_s: float = Field(60.0, ge=1, le=3600)


class ControlConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8766, ge=0, le=65535)
    token_file: Path | None = None  # default: <user config dir>/fluxrt/token
    max_prompt_length: int = Field(2000, ge=1, le=100_000)


class ObsConfig(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(4455, ge=1, le=65535)
    password: SecretStr = SecretStr("")
    prompt_text_source: str = ""  # an OBS text source kept showing the current prompt
    reconnect_max_s: float = Field(10.0, gt=0, le=600)


class PromptConfig(_Section):
    text: PromptText = "a watercolor painting, soft pastel colors"
    preset: str = ""  # start with this preset instead of `text`


class Preset(_Section):
    name: LabelText = Field(min_length=1, max_length=64)
    prompt: PromptText = Field(min_length=1)
    seed: Seed | None = None
    steps: Steps | None = None
    style_reference: Path | None = None


class Config(_Section):
    engine: EngineConfig = EngineConfig()
    cache: CacheConfig = CacheConfig()
    interpolation: InterpolationConfig = InterpolationConfig()
    source: SourceConfig = SourceConfig()
    output: OutputConfig = OutputConfig()
    control: ControlConfig = ControlConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    obs: ObsConfig = ObsConfig()
    prompt: PromptConfig = PromptConfig()
    presets: list[Preset] = []
    scenes: dict[str, str] = {}  # OBS scene name -> preset name
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _references(self) -> "Config":
        names = [p.name for p in self.presets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate preset names {dupes}")
        for scene, preset in self.scenes.items():
            if preset not in names:
                raise ValueError(f"scenes.{scene!r} maps to unknown preset {preset!r} (presets: {names})")
        if self.prompt.preset and self.prompt.preset not in names:
            raise ValueError(f"prompt.preset {self.prompt.preset!r} is not a preset (presets: {names})")
        return self


class ConfigError(Exception):
    """A configuration that cannot be used; `lines` holds one message per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def secret_key(loc: tuple | str) -> bool:
    """Whether the key at `loc` (a path or a dotted name) holds a secret whose value must never be shown."""
    parts = loc.split(".") if isinstance(loc, str) else loc
    return any("password" in str(p) or "token" in str(p) for p in parts)


def format_errors(exc: ValidationError, model: type[BaseModel] = Config) -> list[str]:
    """One line per problem, naming the key (passwords and tokens masked)."""
    return describe_errors(exc, model, secret=secret_key)


def default_toml() -> str:
    """The embedded defaults (vcam/default.toml; configs/default.toml is the same file)."""
    return resources.files("vcam").joinpath("default.toml").read_text()


def set_dotted(data: dict[str, Any], dotted: str, value: Any, origin: str | None = None) -> None:
    """Override `section.key` in a raw config dict (used for CLI flags and `--set`); `origin` (e.g.
    "--set engine.steps.x=1") starts the error's line, so it names what the user typed."""
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError([f"{origin or dotted}: {p} is not a section"])
    cur[parts[-1]] = value


def parse_value(text: str) -> Any:
    """A `--set key=value` value: TOML syntax when it parses (numbers, booleans, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, key by key inside sections; arrays (e.g. [[presets]]) are replaced whole."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


DEFAULTS = "defaults"
OVERRIDE = "override"  # an override given without an origin (a program's, not a person's)


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths of a TOML table's values; an array ([[presets]]) is one value, as `_merge` replaces it whole."""
    out: list[tuple[str, ...]] = []
    for key, value in data.items():
        out += _leaves(value, (*prefix, key)) if isinstance(value, dict) and value else [(*prefix, key)]
    return out


class _Origins:
    """Where each key's value came from: the defaults, the config file, or an override (`--set`, a CLI flag).
    The latest source of a key wins, as it does for the value; a whole table set later replaces the origins
    of the keys inside it."""

    def __init__(self) -> None:
        self._of: dict[tuple[str, ...], tuple[str, bool]] = {}  # path -> (label, the label shows the value)

    def set(self, path: tuple[str, ...], label: str, shows_value: bool) -> None:
        for known in [k for k in self._of if k[:len(path)] == path]:
            del self._of[known]
        self._of[path] = (label, shows_value)

    def of(self, loc: tuple) -> tuple[list[str], bool]:
        """(labels, whether the one label already shows this very key and its value) for an error at `loc`."""
        loc = tuple(str(p) for p in loc)
        holders = [k for k in self._of if loc[:len(k)] == k]
        if holders:  # the value at `loc` or a table or array holding it
            key = max(holders, key=len)
            label, shows_value = self._of[key]
            return [label], shows_value and key == loc
        # an error about a whole table (or the whole config): where the values inside it came from
        labels = list(dict.fromkeys(label for k, (label, _) in self._of.items() if k[:len(loc)] == loc))
        return labels or [DEFAULTS], False


def _without_key(line: str, err: Any) -> str:
    """`key = value: message` -> `message`, for an origin label that already shows the key and the value
    as the user typed them (`--set engine.steps=99`). The line as it is when it has another form."""
    key = ".".join(str(p) for p in err["loc"])
    value = err.get("input")
    text = str(value).lower() if isinstance(value, bool) else repr(value)  # as describe_errors writes it
    for shown in ("", " = ********", f" = {text}"):
        if line.startswith(f"{key}{shown}: "):
            return line[len(key) + len(shown) + 2:]
    return line


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None,
                origins: dict[str, str] | None = None) -> Config:
    """The embedded defaults, then the file at `path` key by key, then the dotted `overrides`; validated.
    Raises ConfigError, one line per problem, each starting with where the bad value came from: the label
    `origins` gives its override key (the CLI: "--set engine.steps=99", "--engine flux3"), the file's path,
    or "defaults" only when neither set it. Labels that show the value replace the line's own `key = value`."""
    raw = tomllib.loads(default_toml())
    where = _Origins()
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist; pass an existing file or omit --config"])
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError([f"{path}: not valid TOML: {e}"]) from None
        raw = _merge(raw, data)
        for leaf in _leaves(data):
            where.set(leaf, str(path), False)
    for key, value in (overrides or {}).items():
        label = (origins or {}).get(key)
        set_dotted(raw, key, value, label)
        where.set(tuple(key.split(".")), label or OVERRIDE, label is not None)
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        # describe_errors gives one line per error, in order
        for err, line in zip(e.errors(), format_errors(e), strict=True):
            labels, shows_value = where.of(err["loc"])
            lines.append(f"{', '.join(labels)}: {_without_key(line, err) if shows_value else line}")
        raise ConfigError(lines) from None


def effective_toml(cfg: Config) -> str:
    """The effective configuration as TOML (secrets masked; unset keys left out, as TOML has no null)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["engine"] = {"name": data["engine"].pop("name"), **data["engine"]}  # vcam's key first, as in default.toml
    if cfg.obs.password.get_secret_value():
        data["obs"]["password"] = "********"
    return tomli_w.dumps(data)
