"""The one device -> host copy per output frame: from the engine's or interpolator's tensor straight into
a shared-memory slot.

On CUDA a copy is fast (DMA) only into page-locked memory. At the first CUDA frame `HostCopy` page-locks
the OUTPUT channel's segment once with `cudaHostRegister`, so frames go straight into their slots; where that
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
    """Copies frames into the slots of one channel (the inference process's OUTPUT)."""

    def __init__(self, channel: FrameChannel) -> None:
        self.channel = channel
        self._tried = False  # page-locking is tried at the first CUDA frame: no CUDA context for CPU engines
        self._registered: tuple[int, int] | None = None  # (address, size) page-locked by us, unlocked on close
        self._staging: torch.Tensor | None = None  # pinned buffer, when page-locking was refused
        self.mode = "cpu"  # what the last copy used: cpu | registered | staged (reported in status)

    def _register(self, device: torch.device) -> None:
        """Page-lock the channel's segment for direct copies (a refusal is logged, not raised)."""
        self._tried = True
        seg = self.channel.segment()
        addr, size = seg.ctypes.data, seg.nbytes
        del seg  # no view may outlive the channel (SharedMemory.close refuses exported buffers)
        try:
            with torch.cuda.device(device):
                err = torch.cuda.cudart().cudaHostRegister(addr, size, 1)  # 1: cudaHostRegisterPortable
        except Exception as e:  # noqa: BLE001 - no CUDA runtime binding: stage instead
            log.info("cannot page-lock the output channel (%s); staging copies through a pinned buffer", e)
            return
        if int(err) == 0:
            self._registered = (addr, size)
        else:
            log.info("cudaHostRegister refused the output channel (error %s); staging through a pinned buffer",
                     int(err))

    def copy(self, src: torch.Tensor, dst: np.ndarray) -> None:
        """dst[...] = src: src a uint8 (H, W, 3) tensor on any device, dst a slot of the channel (or any host
        array); returns once dst holds the frame."""
        if tuple(src.shape) != dst.shape or src.dtype != torch.uint8:
            raise ValueError(f"frame {src.dtype} {tuple(src.shape)} does not fit the slot {dst.dtype} {dst.shape}")
        if src.device.type != "cuda":
            # numpy's single-threaded memcpy: torch's copy_ would wake its thread pool, whose spinning
            # threads take the core the output process paces the camera on (bench pipeline: +2 ms p50, 3x jitter).
            # Other devices (mps) come to the host first: .numpy() works on CPU tensors only
            self.mode = "cpu"
            np.copyto(dst, src.cpu().numpy())
            return
        out = torch.from_numpy(dst)  # a view of the slot: the copy lands in shared memory
        if not self._tried:
            self._register(src.device)
        at, reg = dst.ctypes.data, self._registered
        if reg is not None and reg[0] <= at and at + dst.nbytes <= reg[0] + reg[1]:
            self.mode = "registered"
            out.copy_(src, non_blocking=True)
        else:
            self.mode = "staged"
            if self._staging is None or self._staging.shape != src.shape:
                self._staging = torch.empty(src.shape, dtype=torch.uint8, pin_memory=True)
            self._staging.copy_(src, non_blocking=True)
        torch.cuda.current_stream(src.device).synchronize()  # the slot is published next: the copy must be done
        if self.mode == "staged":
            np.copyto(dst, self._staging.numpy())  # single-threaded, as on the CPU path

    def close(self) -> None:
        if self._registered is not None:
            try:
                torch.cuda.cudart().cudaHostUnregister(self._registered[0])
            except Exception:  # noqa: BLE001 - the process is ending anyway
                pass
            self._registered = None
