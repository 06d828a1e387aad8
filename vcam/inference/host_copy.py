"""The one device -> host copy per output frame: from the engine's or interpolator's tensor straight into
a shared-memory slot.

On CUDA a copy is fast (DMA) only into page-locked memory. `HostCopy.register` page-locks the OUTPUT
channel's segment once with `cudaHostRegister`, so frames go straight into their slots; where that
fails (some kernels and containers refuse to lock shared memory) each frame is staged through one
pinned buffer. On the CPU the copy is a plain memcpy into the slot: the same code path, no staging.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from vcam.shm import FrameChannel

log = logging.getLogger(__name__)


class HostCopy:
    def __init__(self) -> None:
        self._registered: list[tuple[int, int]] = []  # (address, size) page-locked by us, unlocked on close
        self._staging: torch.Tensor | None = None  # pinned buffer, when registering was refused
        self.mode = "cpu"  # what the last copy used: cpu | registered | staged (reported in status)

    def register(self, channel: FrameChannel) -> None:
        """Page-lock the channel's segment for direct copies (CUDA only; a refusal is logged, not raised)."""
        if not torch.cuda.is_available():
            return
        seg = channel.segment()
        addr, size = seg.ctypes.data, seg.nbytes
        del seg  # no view may outlive the channel (SharedMemory.close refuses exported buffers)
        try:
            err = torch.cuda.cudart().cudaHostRegister(addr, size, 0)  # 0: cudaHostRegisterDefault
        except Exception as e:  # noqa: BLE001 - no CUDA runtime binding: stage instead
            log.info("cannot page-lock the output channel (%s); staging copies through a pinned buffer", e)
            return
        if int(err) == 0:
            self._registered.append((addr, size))
        else:
            log.info("cudaHostRegister refused the output channel (error %s); staging through a pinned buffer",
                     int(err))

    def copy(self, src: torch.Tensor, dst: np.ndarray) -> None:
        """dst[...] = src, with src a uint8 (H, W, 3) tensor on any device; returns once dst holds it."""
        if tuple(src.shape) != dst.shape or src.dtype != torch.uint8:
            raise ValueError(f"frame {src.dtype} {tuple(src.shape)} does not fit the slot {dst.dtype} {dst.shape}")
        out = torch.from_numpy(dst)  # a view of the slot: the copy lands in shared memory
        if src.device.type != "cuda":
            self.mode = "cpu"
            out.copy_(src)
            return
        stream = torch.cuda.current_stream(src.device)
        at = dst.ctypes.data
        if any(a <= at and at + dst.nbytes <= a + n for a, n in self._registered):
            self.mode = "registered"
            out.copy_(src, non_blocking=True)
        else:
            self.mode = "staged"
            if self._staging is None or self._staging.shape != src.shape:
                self._staging = torch.empty(src.shape, dtype=torch.uint8, pin_memory=True)
            self._staging.copy_(src, non_blocking=True)
        stream.synchronize()  # the slot is published right after: the copy must have landed
        if self.mode == "staged":
            out.copy_(self._staging)

    def close(self) -> None:
        for addr, _ in self._registered:
            try:
                torch.cuda.cudart().cudaHostUnregister(addr)
            except Exception:  # noqa: BLE001 - the process is ending anyway
                pass
        self._registered.clear()
