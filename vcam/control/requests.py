"""Request bodies of the control API: strict pydantic models (JSON types as the schema says, unknown
keys refused) and the handler that turns their validation errors into one readable `detail`."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic.fields import FieldInfo

from engine.options import Seed, Steps
from vcam.config import CacheConfig, InterpolationConfig
from vcam.prompt_text import LABEL_PATTERN, PROMPT_PATTERN, LabelText, PromptText

# strict: JSON types as the schema says (no false -> 0.0, no "3" -> 3); unknown keys are an error
_STRICT = ConfigDict(extra="forbid", strict=True)


def _whole(v: Any) -> Any:
    # JSON Schema counts 8.0 as an integer; strict pydantic would not
    return int(v) if isinstance(v, float) and v.is_integer() else v


JsonInt = Annotated[int, BeforeValidator(_whole)]
# (this order keeps minimum/maximum in the schema)
PresetIndex = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_whole)]  # 1 = the first, as people count
PresetName = Annotated[str, Field(min_length=1, max_length=64)]


class Body(BaseModel):
    model_config = _STRICT


class PresetRequest(Body):
    preset: PresetIndex | PresetName = Field(
        description="A preset name, its number (1 = the first), 'next' or 'prev'")


class ModeRequest(Body):
    mode: Literal["live", "passthrough", "paused"]


def _patch_model(name: str, source: type[BaseModel], fields: list[str]) -> type[BaseModel]:
    """A request model with `fields` of `source` (same types and bounds), all optional, unknown keys refused."""
    spec: dict[str, Any] = {}
    for f in fields:
        info = source.model_fields[f]
        # same annotation and constraints, default None ("unchanged"); an explicit null is refused
        ann = JsonInt if info.annotation is int else info.annotation
        spec[f] = (ann, FieldInfo.merge_field_infos(info, default=None))
    return create_model(name, __config__=_STRICT, **spec)


# the interpolation model path is a file on the daemon's machine: config only, not settable remotely
CachePatch = _patch_model("CachePatch", CacheConfig, list(CacheConfig.model_fields))
InterpolationPatch = _patch_model("InterpolationPatch", InterpolationConfig, ["method", "factor"])


class SettingsPatch(Body):
    model_config = ConfigDict(**_STRICT, json_schema_extra={"minProperties": 1})

    seed: Annotated[Seed, BeforeValidator(_whole)] = None  # the engine's bounds (engine.options)
    steps: Annotated[Steps, BeforeValidator(_whole)] = None
    mode: Literal["live", "passthrough", "paused"] = None
    cache: CachePatch = None  # type: ignore[valid-type]
    interpolation: InterpolationPatch = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _something(self) -> "SettingsPatch":
        if not self.model_fields_set:
            raise ValueError("nothing to change: send at least one of seed, steps, mode, cache, interpolation")
        return self


def prompt_request(limit: int) -> type[Body]:
    """The PUT /api/prompt body; its length limit is the daemon's control.max_prompt_length."""

    class PromptRequest(Body):
        # control characters are refused first, by position (PromptText); the pattern says the same in the
        # schema and refuses a prompt of only whitespace
        prompt: PromptText = Field(min_length=1, max_length=limit, pattern=PROMPT_PATTERN,
                                   description=f"At most {limit} characters, not only whitespace; no control "
                                               f"characters but tab and line breaks")

    return PromptRequest


def new_preset_request(limit: int) -> type[Body]:
    """The POST /api/presets body: a preset as in the config (name, prompt, optional seed and steps; the
    style image is a file on the daemon's machine, config only), with the daemon's prompt length limit."""

    class NewPreset(Body):
        name: LabelText = Field(min_length=1, max_length=64, pattern=LABEL_PATTERN,
                                description="1-64 characters, one line; not a number, not next/prev")
        prompt: PromptText = Field(min_length=1, max_length=limit, pattern=PROMPT_PATTERN,
                                   description=f"At most {limit} characters, as for PUT /api/prompt")
        seed: Annotated[Seed, BeforeValidator(_whole)] = Field(None, description="omitted: engine.seed")
        steps: Annotated[Steps, BeforeValidator(_whole)] = Field(None, description="omitted: engine.steps")
        replace: bool = Field(False, description="replace the preset of that name instead of answering 409")
        apply: bool = Field(False, description="apply it at once")

    return NewPreset


_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*|[0-9]+)$")


def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON; 422 naming each bad field for one that does not fit its model."""
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        ctx = bad_json[0].get("ctx") or {}
        return JSONResponse({"detail": f"request body is not valid JSON: {ctx.get('error', 'parse error')}"},
                            status_code=400)
    lines, short = [], []
    for e in errors:
        # union members show up in loc as "constrained-str", "function-after[...]": keep field names only
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body" and _FIELD.match(str(p))) or "body"
        msg = "unknown field; remove it" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        lines.append(f"{loc}: {msg}")
        short.append({"loc": list(e.get("loc", ())), "msg": msg, "type": e.get("type")})
    # the offending input is not echoed back: it may be a 100 kB prompt
    return JSONResponse({"detail": "; ".join(lines), "errors": short}, status_code=422)
