"""The daemon's status as strict JSON (the API and the WebSocket send it as is)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """NaN/inf become null, tuples and sets lists, dataclasses, pydantic models (the option types in
    `Settings`) and numpy scalars plain values, unknown objects their str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if callable(getattr(value, "model_dump", None)) and not isinstance(value, type):
        return json_safe(value.model_dump(mode="json"))
    if callable(getattr(value, "item", None)) and getattr(value, "shape", None) == ():  # numpy scalars
        return json_safe(value.item())
    return str(value)
