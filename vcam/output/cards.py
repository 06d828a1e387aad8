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
    """A dark RGB frame of the camera's size with the text lines centred: large on a 1280x720 camera, shrunk so
    a long line (a notice) still fits the width."""
    img = np.full((height, width, 3), 24, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max([cv2.getTextSize(line, font, 1.0, 1)[0][0] for line in lines] + [1])
    scale = max(0.35, min(width / 1000, 0.9 * width / widest))  # 0.35: still legible on a tiny frame
    thickness = max(1, round(scale * 1.5))  # a 1 px stroke looks faint on a large frame
    line_h = int(cv2.getTextSize("Ag", font, scale, thickness)[0][1] * 2.2)
    y = height // 2 - (len(lines) - 1) * line_h // 2
    for line in lines:
        (tw, _), _ = cv2.getTextSize(line, font, scale, thickness)
        cv2.putText(img, line, (max(4, (width - tw) // 2), y), font, scale, (235, 235, 235), thickness, cv2.LINE_AA)
        y += line_h
    return img
