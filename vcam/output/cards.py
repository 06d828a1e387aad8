"""Status cards: what the virtual camera shows when there is no fresh frame to show."""
from __future__ import annotations

import cv2
import numpy as np


def card_lines(mode: str, notice: str | None = None) -> list[str]:
    """The card's text, the same on the camera and on the stream: why there is no fresh frame."""
    notes = [line[:80] for line in (notice or "").splitlines() if line]  # the supervisor's notices, one per line
    waiting = "waiting for the source..." if any(n.startswith("source error") for n in notes) else \
        "waiting for the engine..."
    return ["FluxRT Camera", "paused" if mode == "paused" else waiting, *notes]


def status_card(width: int, height: int, lines: list[str]) -> np.ndarray:
    """A dark RGB frame with the text lines centred."""
    img = np.full((height, width, 3), 24, np.uint8)
    scale = max(0.35, width / 1000)
    line_h = int(cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] * 2.2)
    y = height // 2 - (len(lines) - 1) * line_h // 2
    for line in lines:
        (tw, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(img, line, (max(4, (width - tw) // 2), y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (235, 235, 235), 1, cv2.LINE_AA)
        y += line_h
    return img
