"""The engine's options: every default and bound of the model, the spatial cache and the interpolators.

These models are the one place they are written. vcam's configuration uses them as its [engine], [cache]
and [interpolation] sections, and tests/test_single_source.py checks default.toml, the README's table and
the rest of the code against them. Values are validated once, where they enter: `Options.parse` turns a
mapping (or keyword arguments) into a model and names every bad key in one EngineConfigError; an instance
is taken as it is, so engines and the spatial cache never check the same bound again.
"""
from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping, Union, get_args, get_origin

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, Strict, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from engine.errors import EngineConfigError
from engine.flux2.catalog import KLEIN_MODELS

DEFAULT_MODELS_DIR = Path("~/.cache/fluxrt/models")  # where `fluxrt-cam models download` puts weights
DEFAULT_MODEL = KLEIN_MODELS["klein-4b"].folder  # Apache-2.0; the 9B checkpoints are non-commercial
MAX_STEPS = 8  # klein is step-distilled: 4 steps, 2 work

# Reusable field types, so that every place that takes one of these values has the same bounds.
# Strict ints: no True -> 1, no 2.0 -> 2, no "4" -> 4 (TOML and JSON give real integers).
Steps = Annotated[int, Strict(), Field(ge=1, le=MAX_STEPS)]
Seed = Annotated[int, Strict(), Field(ge=0, le=2**32 - 1)]  # numpy / torch generator seeds are 32-bit
Resolution = Annotated[int, Strict(), Field(ge=16, le=2048, multiple_of=16)]  # VAE 8x, then 2x2 patches
InterpolationMethod = Literal["auto", "none", "rife", "rife-v4.25", "rife-v3-hd", "flow", "blend"]
INTERPOLATION_METHODS: tuple[str, ...] = get_args(InterpolationMethod)


class Options(BaseModel):
    """Base of every option model (and of vcam's config sections): unknown keys are errors, assignments
    are validated, and a number given for a text key is text (`--set source.webcam=1`, a numeric password)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)
    what: ClassVar[str] = "key"  # how an unknown key is named in errors

    @classmethod
    def parse(cls, options: Any = None, /, **changes: Any):
        """`options` (an instance of this model: used as it is; a mapping; None: the defaults) with
        `changes` on top, validated. Raises EngineConfigError naming each bad key, its value and what is allowed."""
        if isinstance(options, cls) and not changes:
            return options
        if isinstance(options, BaseModel):
            options = options.model_dump()
        if options is not None and not isinstance(options, Mapping):
            raise EngineConfigError(f"{cls.what}s must be a {cls.__name__} or a dict of {', '.join(cls.model_fields)}; "
                                    f"got {type(options).__name__}")
        try:
            return cls.model_validate({**(options or {}), **changes})
        except ValidationError as e:
            raise EngineConfigError("; ".join(describe_errors(e, cls))) from None

    @classmethod
    def check(cls, name: str, value: Any) -> Any:
        """One field's value, validated as the model would (e.g. per-frame `steps`); EngineConfigError if bad."""
        try:
            return getattr(cls.__pydantic_validator__.validate_assignment(cls.model_construct(), name, value), name)
        except ValidationError as e:
            raise EngineConfigError("; ".join(describe_errors(e, cls))) from None

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # Python counts True as 1, so lax int / float fields take `steps = true` as 1 step: refuse it for every
        # numeric key at once, here, rather than relying on each field remembering Strict()
        if isinstance(value, bool) and info.field_name is not None:
            kind = _number_kind(cls.model_fields[info.field_name].annotation)
            if kind is not None:
                raise PydanticCustomError("bool_not_number", f"expected {kind}, not true or false")
        return value


def _number_kind(annotation: Any) -> str | None:
    """"an integer" / "a number" when `annotation` takes an int or a float but not a bool; None otherwise."""
    members = _members(annotation)
    if bool in members:
        return None
    return "an integer" if int in members else "a number" if float in members else None


def _members(annotation: Any) -> list[Any]:
    """The types a field takes, through Annotated and unions (`Steps | None` -> [int, NoneType])."""
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def allowed(model: type[BaseModel], loc: tuple) -> str:
    """The bounds a field declares, in words ("1-8", "a multiple of 16 in 16-2048"), from its metadata."""
    field = None
    for part in loc:
        model = next((a for a in (model, *get_args(model)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if isinstance(part, int) or model is None:  # a list item, or no model to look into
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return ""
        model = field.annotation
    if field is None:
        return ""
    meta = list(field.metadata)
    for arg in get_args(field.annotation):  # `Steps | None`: the bounds sit on the Annotated member
        if get_origin(arg) is Annotated:
            meta += [x for m in get_args(arg)[1:] for x in (m.metadata if isinstance(m, FieldInfo) else [m])]
    b = {k: getattr(m, k) for m in meta for k in ("ge", "gt", "le", "lt", "multiple_of") if hasattr(m, k)}
    parts = [f"{b['ge']}-{b['le']}"] if "ge" in b and "le" in b else \
        [f"{op} {b[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in b]
    text = ", ".join(parts)
    if "multiple_of" in b:
        text = f"a multiple of {b['multiple_of']}" + (f" in {text}" if text else "")
    return text


def describe_errors(exc: ValidationError, model: type[BaseModel],
                    secret: Callable[[tuple], bool] = lambda loc: False) -> list[str]:
    """One line per problem: `key = value: what is wrong (allowed: ...)`; values at `secret` keys are masked."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        # true / false as TOML and JSON spell them: that is how the user wrote them
        text = str(value).lower() if isinstance(value, bool) else repr(value)
        shown = "" if isinstance(value, (dict, BaseModel)) else " = ********" if secret(err["loc"]) else f" = {text}"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}{shown}: unknown {_what(model, err['loc'][:-1])}; allowed: "
                         f"{', '.join(_fields(model, err['loc'][:-1]))}")
            continue
        hint = allowed(model, err["loc"]) if err["type"] not in ("literal_error", "value_error") else ""
        lines.append(f"{key}{shown}: {err['msg']}" + (f" (allowed: {hint})" if hint else ""))
    return lines


def _section(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The model that holds the key at `loc` (list items included: `presets.0.name` -> Preset)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:  # a list index
            continue
        ann = field.annotation
        model = next((a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)), model)
    return model


def _what(model: type[BaseModel], loc: tuple) -> str:
    return getattr(_section(model, loc), "what", "key")


def _fields(model: type[BaseModel], loc: tuple) -> list[str]:
    return list(_section(model, loc).model_fields)


class CacheOptions(Options):
    """The spatial cache (engine.spatial_cache). Defaults from measurements: the `bench cache` figures and
    tests/test_spatial_cache_mask.py for tau."""

    what: ClassVar[str] = "spatial cache option"

    enabled: bool = True
    # per-cell mean abs difference, 0-255 scale, after a 3x3 blur (sensor noise of sigma 8 stays < 3.5)
    tau: float = Field(4.0, ge=0.0, le=255.0)
    halo: int = Field(1, ge=0, le=8, strict=True)  # dilation, in cells
    # R: a cell below tau but changed since it was computed is recomputed within R frames; 0 disables
    refresh_period: int = Field(30, ge=0, le=10_000, strict=True)
    # above this active fraction (of the grid) run the dense model. Measured (bench cache, 2 CPU cores):
    # the cached path stays faster than dense up to 100% active (text is served from cache: ~1.3x), so
    # rho only buys exactness: frames where nearly everything changed (cuts, exposure jumps) refresh all.
    rho: float = Field(0.95, ge=0.0, le=1.0)

    @classmethod
    def parse(cls, options: Any = None, /, **changes: Any) -> "CacheOptions":
        """As Options.parse; True means the defaults, False the cache off."""
        if isinstance(options, bool):
            options = {"enabled": options}
        return super().parse(options, **changes)


class InterpolationOptions(Options):
    """Frame interpolation between engine frames (engine.interp); "none" and factor 1 turn it off."""

    what: ClassVar[str] = "interpolation option"

    method: InterpolationMethod = "auto"
    factor: int = Field(2, ge=1, le=16, strict=True)  # output frames per engine frame
    # FluxRT's interpolation_exp k, accepted as factor 2**k when given
    exp: int | None = Field(None, ge=0, le=4, strict=True)
    model_path: Path | None = None  # a flownet.pkl or a folder holding one

    @model_validator(mode="after")
    def _exp(self) -> "InterpolationOptions":
        if self.exp is not None:
            object.__setattr__(self, "factor", 2**self.exp)
        return self


class ModelOptions(Options):
    """The FLUX.2 model and how it runs: what vcam's [engine] section holds besides the engine's name."""

    what: ClassVar[str] = "engine option"

    # a diffusers-layout folder, a name under models_dir, or a hub id already in the local HF cache
    model: str = DEFAULT_MODEL
    models_dir: Path = DEFAULT_MODELS_DIR
    # about 16:9 like the camera (1280x720), FluxRT's size; `bench engine` (flux2-tiny, 2 CPU cores): 1.25x the
    # frames/s of 512x512 and 1.5x those of 768x432 (720 / 1024 / 1296 image tokens)
    width: Resolution = 576
    height: Resolution = 320
    steps: Steps = 2
    seed: Seed = 0
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 elsewhere
    device: str = "auto"
    vae: Literal["full", "taef2"] = "full"
    attention_backend: str = "auto"
    compile: bool = False
    text_encoder_offload: bool = False
    style_reference: Path | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "mps") and not (v == "cuda" or v.startswith("cuda:") and v[5:].isdigit()):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:N")
        return v


class EngineOptions(ModelOptions):
    """Everything `create_engine("flux2" | "flux2-tiny", ...)` takes: the model options, an explicit TAEF2
    weights path, the spatial cache, and a style reference given as an RGB uint8 array too."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    style_reference: Path | np.ndarray | None = None
    taef2_path: Path | None = None
    cache: CacheOptions = CacheOptions()

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_switch(cls, v: Any) -> Any:
        return {"enabled": v} if isinstance(v, bool) else CacheOptions() if v is None else v
