"""Text that reaches the model or the screen as a prompt or a preset name: no control characters.

A NUL or an escape sequence in a prompt is never what someone meant to type (it comes from a paste, a
script or an attacker), and it goes on to the text encoder, the OBS text source, the page and the logs.
Refused, not stripped, so the sender learns about it. Tabs and line breaks stay allowed in prompts: the
page's text box produces them and the text encoder reads them as spaces. Preset names allow none of them.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Callable

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

# C0 controls, DEL and the C1 controls U+0080-U+009F; in prompts less tab, line feed and carriage return
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_CONTROL_BUT_LINES = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"


def control_character_problem(text: str, lines_allowed: bool = True) -> str | None:
    """None when `text` holds no refused control character; else which one, where (from 1), and the fix."""
    found = re.search(f"[{_CONTROL_BUT_LINES if lines_allowed else _CONTROL}]", text)
    if found is None:
        return None
    return (f"contains control character U+{ord(found.group()):04X} at position {found.start() + 1}; remove it"
            + ("; tabs and line breaks are allowed" if lines_allowed else ""))


def _refuse_controls(lines_allowed: bool) -> Callable[[Any], Any]:
    # before the str validation: so a prompt of nothing but control characters gets this message, not
    # "should match pattern"; other types pass on to pydantic's own check
    def check(value: Any) -> Any:
        problem = control_character_problem(value, lines_allowed) if isinstance(value, str) else None
        if problem:
            raise PydanticCustomError("control_character", problem)
        return value

    return check


PromptText = Annotated[str, BeforeValidator(_refuse_controls(lines_allowed=True))]
LabelText = Annotated[str, BeforeValidator(_refuse_controls(lines_allowed=False))]  # a preset name: one line

# the same rule as a JSON Schema pattern, for the control API's schema (clients and generated requests read
# it): no control character but tab and line breaks, and at least one character that is not whitespace
PROMPT_PATTERN = rf"^[^{_CONTROL_BUT_LINES}]*[^\s{_CONTROL}][^{_CONTROL_BUT_LINES}]*$"
# a preset name as the schema states it: one line, no control characters at all, not only whitespace
# (LabelText refuses control characters by position first; the pattern tells schema-driven clients)
LABEL_PATTERN = rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$"
