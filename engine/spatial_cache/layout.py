"""Where each token sits in FLUX.2's joint sequence, and which rows a frame recomputes.

Canonical order of the joint sequence (the order the cached forward uses everywhere):

    [text (T) | noise (N = grid_h * grid_w) | grid references (N each) | extra (E)]

The noise tokens and the webcam reference tokens share the token grid (VAE 8x + 2x2 patchify = one
token per 16x16 pixel cell): cell c is row T + c of the noise and row T + N*k + c of reference k.
Text tokens and `extra` tokens (a fixed style reference) do not follow the webcam; they are "side"
rows, recomputed on full refreshes and by the rolling refresh only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TokenLayout:
    text: int  # text tokens, first in the joint sequence
    grid_h: int  # token grid rows (height / 16)
    grid_w: int  # token grid columns (width / 16)
    grid_refs: int = 1  # reference images aligned with the noise grid (the webcam frame); 0 = text-to-image
    extra: int = 0  # tokens after them that do not follow the grid (a fixed style reference)

    def __post_init__(self) -> None:
        if self.text < 0 or self.grid_h <= 0 or self.grid_w <= 0 or self.grid_refs < 0 or self.extra < 0:
            raise ValueError(f"invalid token layout {self}: counts must be >= 0 and the grid non-empty")

    @property
    def cells(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def noise_start(self) -> int:
        return self.text

    @property
    def ref_start(self) -> int:
        """First reference row (grid references, then extra): the 9B-KV model's reference tokens."""
        return self.text + self.cells

    @property
    def extra_start(self) -> int:
        return self.text + self.cells * (1 + self.grid_refs)

    @property
    def image(self) -> int:
        """Rows of the image stream (noise + references + extra)."""
        return self.length - self.text

    @property
    def length(self) -> int:
        return self.extra_start + self.extra

    @property
    def side(self) -> int:
        """Rows that are not on the grid: text, then extra."""
        return self.text + self.extra


@dataclass
class RowPlan:
    """The rows one denoising step recomputes, as device index tensors built once per frame on the host.

    Rows are sorted positions in the joint sequence, grouped [text | noise | reference]; the group
    sizes are host integers, so no step ever reads a device mask back (no host sync).
    """

    full: bool  # every row: the block code uses slices instead of gathers
    n_text: int
    n_noise: int
    n_ref: int  # reference rows (grid references + extra), always last
    rows: torch.Tensor | None  # (n,) int64 positions in the joint sequence; None when full
    txt_in: torch.Tensor | None  # (n_text,) rows of encoder_hidden_states
    img_in: torch.Tensor | None  # (n_noise + n_ref,) rows of the image stream
    noise_out: torch.Tensor | None  # (n_noise,) rows of the noise output
    freqs: torch.Tensor  # (n, head_dim / 2, 2) float32 rotary rows (cos, sin)

    @property
    def n(self) -> int:
        return self.n_text + self.n_noise + self.n_ref

    @property
    def n_image(self) -> int:
        return self.n_noise + self.n_ref


def bucket_size(n: int, buckets: tuple[int, ...] | None) -> int:
    """The smallest bucket >= n (n itself when there are no buckets or n exceeds them all; 0 stays 0)."""
    if n == 0 or not buckets:
        return n
    for b in sorted(buckets):
        if b >= n:
            return b
    return n


def default_buckets(image_rows: int) -> tuple[int, ...]:
    """A few sizes (fractions of the image stream, multiples of 64) for compiled / CUDA-graph shapes."""
    fracs = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 3 / 4, 1.0)
    return tuple(sorted({min(image_rows, max(64, int(np.ceil(f * image_rows / 64)) * 64)) for f in fracs}))


def _pad(rows: np.ndarray, size: int) -> np.ndarray:
    # repeat the last real row: a repeated row computes and writes identical values
    if size <= len(rows):
        return rows
    return np.concatenate([rows, np.full(size - len(rows), rows[-1], dtype=rows.dtype)])


def build_row_plan(
    layout: TokenLayout,
    active_cells: np.ndarray | None,
    active_side: np.ndarray | None,
    *,
    include_refs: bool,
    freqs: torch.Tensor,
    buckets: tuple[int, ...] | None = None,
) -> RowPlan:
    """Rows for one step. `active_cells`: bool (cells,) or None for every row (then `active_side` is
    ignored); `active_side`: bool (text + extra,). `include_refs=False` drops the reference rows
    (9B-KV after step 0: the reference K/V of step 0 serve every later step)."""
    device = freqs.device
    if active_cells is None:
        if include_refs:
            return RowPlan(True, layout.text, layout.cells, layout.image - layout.cells, None, None, None, None, freqs)
        # every text and noise row, no reference rows: an explicit index plan
        active_cells = np.ones(layout.cells, dtype=bool)
        active_side = np.ones(layout.side, dtype=bool)
    cell_mask = np.asarray(active_cells, dtype=bool).reshape(-1)
    side = np.asarray(active_side if active_side is not None else np.zeros(layout.side, bool), dtype=bool)
    if cell_mask.size != layout.cells or side.shape != (layout.side,):
        raise ValueError(
            f"active set does not match the layout {layout}: got {cell_mask.size} cells and {side.shape} side rows"
        )
    cells = np.flatnonzero(cell_mask).astype(np.int64)
    text_rows = np.flatnonzero(side[: layout.text]).astype(np.int64)
    noise_rows = layout.noise_start + cells
    ref_rows = np.zeros(0, np.int64)
    if include_refs:
        grid_refs = [layout.ref_start + k * layout.cells + cells for k in range(layout.grid_refs)]
        extra_rows = layout.extra_start + np.flatnonzero(side[layout.text :]).astype(np.int64)
        ref_rows = np.concatenate(grid_refs + [extra_rows]) if grid_refs or extra_rows.size else ref_rows
    text_rows = _pad(text_rows, bucket_size(len(text_rows), buckets))
    n_noise, n_ref = len(noise_rows), len(ref_rows)
    image_rows = np.concatenate([noise_rows, ref_rows])
    padded = _pad(image_rows, bucket_size(len(image_rows), buckets))
    if n_ref:
        n_ref += len(padded) - len(image_rows)
    else:
        n_noise += len(padded) - len(image_rows)
    rows_np = np.concatenate([text_rows, padded])

    def dev(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if device.type == "cuda":
            t = t.pin_memory()
        return t.to(device, non_blocking=True)

    rows = dev(rows_np)
    return RowPlan(
        full=False,
        n_text=len(text_rows),
        n_noise=n_noise,
        n_ref=n_ref,
        rows=rows,
        txt_in=dev(text_rows),
        img_in=dev(padded - layout.text),
        noise_out=dev(padded[:n_noise] - layout.noise_start),
        freqs=freqs.index_select(0, rows),
    )
