"""Change mask per token cell (16x16 pixels), with halo and a rolling refresh of bounded staleness.

A cell is *changed* when the mean absolute difference (0-255 scale, after a 3x3 box blur that
takes the edge off sensor noise) between the new frame and the content the cell was LAST COMPUTED
FROM exceeds tau: slow drift accumulates until it is recomputed, and a recomputed cell resets its
reference. Changed cells are dilated by `halo` cells (the VAE encoder and attention spread a change
beyond its cell).

Rolling refresh: a row is *stale* when something changed after it was last computed (its values
were computed in an older context). Every stale row is recomputed within `refresh_period` frames:
cell c when `frame % R == slot[c]`, slots spread evenly (a fixed permutation), so there is no
periodic full-cost frame, and a still scene settles to zero work (an identical frame then
reproduces the previous output exactly). Side rows (text, a style reference) refresh the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CELL = 16  # pixels per token cell (VAE 8x, then 2x2 patchify)


@dataclass
class MaskProposal:
    """What a frame would recompute; `ChangeMask.commit` records it once the frame ran."""

    diff: np.ndarray  # (gh, gw) float32 per-cell mean abs difference (inf on a first frame)
    changed: np.ndarray  # (gh, gw) bool: diff > tau
    active: np.ndarray  # (gh, gw) bool: changed + halo + refreshed
    refreshed: np.ndarray  # (gh, gw) bool: recomputed by the rolling refresh only
    side: np.ndarray  # (side rows,) bool: text / extra rows the rolling refresh recomputes
    blurred: np.ndarray  # (H, W, 3) float32 the content the active cells are now computed from
    first: bool  # nothing computed yet: everything must be

    @property
    def active_fraction(self) -> float:
        return float(self.active.mean())


def box_blur3(img: np.ndarray) -> np.ndarray:
    """3x3 box blur of an (H, W, C) image, edges replicated; float32."""
    # reshape: OpenCV returns (H, W) for a one-channel (H, W, 1) input
    return cv2.blur(img.astype(np.float32), (3, 3), borderType=cv2.BORDER_REPLICATE).reshape(img.shape)


def cell_mean(img: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """Mean of an (gh*16, gw*16, C) array over each cell: (gh, gw)."""
    return img.reshape(gh, CELL, gw, CELL, -1).mean(axis=(1, 3, 4))


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Square dilation of a bool mask by r cells (Chebyshev distance); cells outside the grid add nothing."""
    if r <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


class ChangeMask:
    """Per-cell change detection against the content each cell was last computed from. tau / halo /
    refresh_period are checked once, by engine.options.CacheOptions (the cache builds masks from validated settings only)."""

    def __init__(self, grid_h: int, grid_w: int, side_rows: int, *, tau: float, halo: int, refresh_period: int) -> None:
        self.grid_h, self.grid_w, self.side_rows = grid_h, grid_w, side_rows
        self.tau, self.halo, self.period = float(tau), int(halo), int(refresh_period)
        cells = grid_h * grid_w
        if self.period:
            # evenly spread slots, spatially dispersed: each slot holds cells/R (+-1) cells
            self._slots = (np.random.default_rng(0).permutation(cells) % self.period).reshape(grid_h, grid_w)
            self._side_slots = np.arange(side_rows) % self.period
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next frame is computed in full."""
        self._content: np.ndarray | None = None
        self._computed_at = np.full((self.grid_h, self.grid_w), -1, dtype=np.int64)
        self._side_computed_at = np.full(self.side_rows, -1, dtype=np.int64)
        self._changed_at = -1  # the last frame where a change (or a full refresh) was computed
        self.frame = 0

    def propose(self, frame: np.ndarray) -> MaskProposal:
        h, w = self.grid_h * CELL, self.grid_w * CELL
        if frame.dtype != np.uint8 or frame.shape != (h, w, 3):
            raise ValueError(
                f"the change mask needs the frame at model resolution: uint8 ({h}, {w}, 3), got {frame.dtype} {frame.shape}"
            )
        blurred = box_blur3(frame)
        grid = (self.grid_h, self.grid_w)
        if self._content is None:
            ones = np.ones(grid, dtype=bool)
            return MaskProposal(np.full(grid, np.inf, np.float32), ones, ones, np.zeros(grid, bool),
                                np.ones(self.side_rows, bool), blurred, first=True)
        diff = cell_mean(np.abs(blurred - self._content), *grid).astype(np.float32)
        changed = diff > self.tau
        active = dilate(changed, self.halo)
        refreshed = np.zeros(grid, dtype=bool)
        side = np.zeros(self.side_rows, dtype=bool)
        if self.period:
            latest_change = self.frame if changed.any() else self._changed_at
            slot = self.frame % self.period
            refreshed = (self._slots == slot) & (self._computed_at < latest_change) & ~active
            side = (self._side_slots == slot) & (self._side_computed_at < latest_change)
        return MaskProposal(diff, changed, active | refreshed, refreshed, side, blurred, first=False)

    def commit(self, p: MaskProposal, *, full: bool) -> None:
        """Record what the frame computed (`full`: every row, e.g. the dense fallback)."""
        f = self.frame
        if full or self._content is None:
            self._content = p.blurred.copy()
            self._computed_at[:] = f
            self._side_computed_at[:] = f
            self._changed_at = f
        else:
            pix = np.repeat(np.repeat(p.active, CELL, axis=0), CELL, axis=1)
            self._content[pix] = p.blurred[pix]
            self._computed_at[p.active] = f
            self._side_computed_at[p.side] = f
            if p.changed.any():
                self._changed_at = f
        self.frame += 1
