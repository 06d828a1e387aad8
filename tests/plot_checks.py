"""What the benchmark plot tests check, once: a PNG that decodes, from a labelled figure."""
from __future__ import annotations

from pathlib import Path

import cv2


def check_figure(png: Path, fig) -> None:
    """A PNG that decodes to a real picture, from a figure whose every axes is labelled."""
    assert png.is_file() and png.stat().st_size > 0
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0
    assert fig.get_suptitle().strip()
    assert fig.axes and all(ax.get_xlabel().strip() and ax.get_ylabel().strip() for ax in fig.axes)
