"""Shared-memory frame channels between the daemon's processes.

A channel is one shared-memory segment holding a ring of slots; each slot is a small metadata record,
the engine's recomputed-cells mask (optional) and one RGB frame. The single writer never blocks (it overwrites the oldest slot); the single reader
takes the newest complete frame (`read_latest`) or every frame it has not seen yet (`read_new`).

No torn frames: each slot carries a sequence word in the style of a seqlock. The writer sets it to
2*count+1 before touching the slot and to 2*count+2 after; a reader copies the slot and accepts the
copy only if the word read before and after equals 2*count+2 for the count it wanted.

Ordering: the seqlock relies on stores becoming visible in program order, which x86 guarantees; on
weakly ordered CPUs (ARM, Apple silicon) a torn copy is still caught only when the sequence word is
reordered too - a known limit of doing this from Python without barriers.

Writing in place: `writing(meta)` yields the next slot's frame array, so a producer can copy straight
into shared memory (the inference process copies GPU frames there, see vcam/inference/host_copy.py);
`write(frame, meta)` is the same for a frame already on the host. This module never imports torch.

One owner: the supervisor creates and unlinks segments (`FrameChannel.create`), children only
`attach`, so a child that dies, even by kill -9, leaves nothing behind. Segment names carry the owner's
PID (`fluxrt-<pid>-<role>-<random>`): when the owner itself dies by kill -9 (and Python's resource tracker
with it), the next daemon's start finds the segments whose owner is gone and removes them
(`remove_stale_segments`).
"""
from __future__ import annotations

import multiprocessing
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

SHM_PREFIX = "fluxrt"

# One metadata record per slot (64 bytes). `seq` is the seqlock word described above.
META_DTYPE = np.dtype([
    ("seq", "<i8"),
    ("frame_id", "<i8"),
    ("capture_ts", "<f8"),  # time.monotonic() when the source produced the frame
    ("prompt_version", "<i8"),
    ("group", "<i8"),  # engine output number (output channel); frames of one group play together
    ("index", "<i2"),  # position within the group: 0 .. count-1, the last is the engine frame
    ("count", "<i2"),
    ("has_mask", "<i4"),  # the slot's mask region holds the engine's recomputed-cells grid
    ("engine_interval", "<f8"),  # seconds between engine outputs as the writer measured it
    ("write_ts", "<f8"),
])
_HEADER = 64  # write count (int64) + room


@dataclass(frozen=True)
class FrameMeta:
    frame_id: int
    capture_ts: float
    prompt_version: int = 0
    group: int = 0
    index: int = 0
    count: int = 1
    engine_interval: float = 0.0
    write_ts: float = 0.0
    # bool (ceil(H/16), ceil(W/16)): the token cells the engine recomputed for this frame (spatial cache)
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def is_engine_frame(self) -> bool:
        return self.index == self.count - 1


@dataclass(frozen=True)
class ChannelSpec:
    """Everything a child needs to attach (picklable)."""

    name: str
    width: int
    height: int
    slots: int


def _round64(n: int) -> int:
    return (n + 63) // 64 * 64


def mask_shape(width: int, height: int) -> tuple[int, int]:
    """The token grid of a frame: one cell per 16x16 pixels (VAE 8x + 2x2 patchify)."""
    return (height + 15) // 16, (width + 15) // 16


def slot_bytes(width: int, height: int) -> int:
    gh, gw = mask_shape(width, height)
    return META_DTYPE.itemsize + _round64(gh * gw) + width * height * 3


class ChannelError(RuntimeError):
    """A channel cannot be created; the message says why and what to change."""


def check_space(size: int, role: str, where: str = "/dev/shm") -> None:
    """Shared memory is allocated lazily: a segment larger than the free space is created fine and
    then kills its writer with SIGBUS on first touch. Refuse up front instead (Linux; Docker's
    default /dev/shm is 64 MB)."""
    try:
        st = os.statvfs(where)
    except OSError:
        return  # no /dev/shm (macOS): nothing to check
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise ChannelError(f"the {role} frame channel needs {size / 1e6:.0f} MB of shared memory but {where} has "
                           f"{free / 1e6:.0f} MB free; lower engine.width/height, or give the container more "
                           f"(docker run --shm-size=512m)")


def new_segment_name(role: str) -> str:
    """`fluxrt-<owner pid>-<role>-<random>`: the PID says whose it is when its owner is gone."""
    return f"{SHM_PREFIX}-{os.getpid()}-{role}-{secrets.token_hex(4)}"


def segment_owner(name: str) -> int | None:
    """The PID in a /dev/shm name made by `new_segment_name` (or a semaphore named after `name_semaphores`),
    else None (not ours, or an older format)."""
    parts = name.removeprefix("sem.").split("-")
    if len(parts) != 4 or parts[0] != SHM_PREFIX or not parts[1].isdigit():
        return None
    return int(parts[1])


def name_semaphores() -> None:
    """Name this process's multiprocessing semaphores (queues, doorbells, events) like our segments,
    `sem.fluxrt-<pid>-sem-<random>` in /dev/shm instead of `sem.mp-<random>`: the spawn start method keeps
    them named until their owner frees them, so after kill -9 of every process they would leak with no
    owner to tell. `remove_stale_segments` then removes them with the segments. (multiprocessing has no
    public setting for it; `semprefix` is the one its `SemLock._make_name` reads.)"""
    multiprocessing.current_process()._config["semprefix"] = f"/{SHM_PREFIX}-{os.getpid()}-sem"  # type: ignore[attr-defined]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to judge
        return True
    return True


@dataclass(frozen=True)
class StaleSegment:
    name: str
    owner: int
    size: int


def remove_stale_segments(where: str = "/dev/shm") -> list[StaleSegment]:
    """Unlink every `fluxrt-<pid>-...` segment (and semaphore) whose owner process no longer exists; returns
    what went.
    Segments of live processes (another daemon, a test) are left alone. No /dev/shm (macOS): nothing."""
    try:
        names = os.listdir(where)
    except OSError:
        return []
    removed = []
    for name in names:
        owner = segment_owner(name)
        if owner is None or pid_alive(owner):
            continue
        path = os.path.join(where, name)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:  # its owner's resource tracker got there first
            continue
        except OSError:  # e.g. another user's segment in a shared /dev/shm
            continue
        removed.append(StaleSegment(name, owner, size))
    return removed


def attach_segment(name: str) -> SharedMemory:
    """Attach without registering with the resource tracker: on Python < 3.13 an attaching process
    registers the segment and its exit would unlink the supervisor's segment or drop its record."""
    try:
        return SharedMemory(name=name, track=False)  # type: ignore[call-arg]  # Python >= 3.13
    except TypeError:
        original = resource_tracker.register
        resource_tracker.register = lambda *a, **k: None  # type: ignore[assignment]
        try:
            return SharedMemory(name=name)
        finally:
            resource_tracker.register = original  # type: ignore[assignment]


class FrameChannel:
    def __init__(self, shm: SharedMemory, spec: ChannelSpec, owner: bool):
        self.spec, self._shm, self.owner = spec, shm, owner
        self.frame_shape = (spec.height, spec.width, 3)
        self.mask_shape = mask_shape(spec.width, spec.height)
        mask_bytes = _round64(self.mask_shape[0] * self.mask_shape[1])
        self._slot_bytes = slot_bytes(spec.width, spec.height)
        buf = shm.buf
        self._count = np.ndarray((1,), np.int64, buf, 0)  # frames written so far
        base = [_HEADER + i * self._slot_bytes for i in range(spec.slots)]
        self._meta = [np.ndarray((1,), META_DTYPE, buf, b) for b in base]
        self._masks = [np.ndarray(self.mask_shape, np.bool_, buf, b + META_DTYPE.itemsize) for b in base]
        self._frames = [np.ndarray(self.frame_shape, np.uint8, buf, b + META_DTYPE.itemsize + mask_bytes) for b in base]
        self._last_read = -1

    # ---- life cycle ------------------------------------------------------------------------------
    @classmethod
    def create(cls, role: str, width: int, height: int, slots: int = 4) -> "FrameChannel":
        if slots < 2:
            raise ValueError("a channel needs at least 2 slots")
        spec = ChannelSpec(new_segment_name(role), width, height, slots)
        size = _HEADER + slots * slot_bytes(width, height)
        check_space(size, role)
        shm = SharedMemory(name=spec.name, create=True, size=size)
        ch = cls(shm, spec, owner=True)
        ch._count[0] = 0
        for m in ch._meta:
            m[0]["seq"] = 0
        return ch

    @classmethod
    def attach(cls, spec: ChannelSpec) -> "FrameChannel":
        return cls(attach_segment(spec.name), spec, owner=False)

    def close(self) -> None:
        # drop numpy views first: SharedMemory.close() fails while buffers are exported
        self._count = None  # type: ignore[assignment]
        self._meta, self._masks, self._frames = [], [], []
        try:
            self._shm.close()
        except BufferError:
            pass
        if self.owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass

    # ---- writer ----------------------------------------------------------------------------------
    def write(self, frame: np.ndarray, meta: FrameMeta) -> int:
        """Publish `frame`; never blocks. Returns the frame's count (its position in the stream)."""
        if tuple(frame.shape) != self.frame_shape:
            raise ValueError(f"frame shape {tuple(frame.shape)} does not match channel {self.frame_shape}")
        with self.writing(meta) as dst:
            np.copyto(dst, frame)
        return self.written - 1

    @contextmanager
    def writing(self, meta: FrameMeta) -> Iterator[np.ndarray]:
        """Yield the next slot's frame array (uint8 (H, W, 3)) to fill in place; publish it with `meta` on
        exit. Never blocks. Readers skip the slot while it is being filled; if the block raises, nothing is
        published and the next write reuses the slot."""
        count = int(self._count[0])
        slot = count % self.spec.slots
        m = self._meta[slot]
        m["seq"] = 2 * count + 1  # writing
        yield self._frames[slot]
        m["frame_id"], m["capture_ts"], m["prompt_version"] = meta.frame_id, meta.capture_ts, meta.prompt_version
        m["group"], m["index"], m["count"] = meta.group, meta.index, meta.count
        has_mask = meta.mask is not None and meta.mask.shape == self.mask_shape
        if has_mask:
            np.copyto(self._masks[slot], meta.mask)
        m["has_mask"] = int(has_mask)
        m["engine_interval"], m["write_ts"] = meta.engine_interval, time.monotonic()
        m["seq"] = 2 * count + 2  # complete
        self._count[0] = count + 1

    def segment(self) -> np.ndarray:
        """The whole shared-memory segment as a uint8 array: for registering it with a GPU driver once
        (page-locked copies straight into the slots)."""
        return np.ndarray((self._shm.size,), np.uint8, self._shm.buf, 0)

    # ---- reader ----------------------------------------------------------------------------------
    @property
    def written(self) -> int:
        return int(self._count[0])

    def _read(self, count: int, out: np.ndarray | None) -> tuple[np.ndarray, FrameMeta] | None:
        slot = count % self.spec.slots
        m = self._meta[slot]
        done = 2 * count + 2
        if int(m[0]["seq"]) != done:
            return None
        frame = np.copy(self._frames[slot]) if out is None else np.copyto(out, self._frames[slot]) or out
        rec: Any = m[0].copy()
        mask = self._masks[slot].copy() if rec["has_mask"] else None
        if int(m[0]["seq"]) != done:  # overwritten while we copied: torn, discard
            return None
        meta = FrameMeta(int(rec["frame_id"]), float(rec["capture_ts"]), int(rec["prompt_version"]),
                         int(rec["group"]), int(rec["index"]), int(rec["count"]),
                         float(rec["engine_interval"]), float(rec["write_ts"]), mask)
        return frame, meta

    def read_latest(self, out: np.ndarray | None = None) -> tuple[np.ndarray, FrameMeta] | None:
        """The newest complete frame not read before, or None."""
        for _ in range(4):  # the writer can lap us at most a few times in a row
            count = self.written - 1
            if count <= self._last_read:
                return None
            got = self._read(count, out)
            if got is not None:
                self._last_read = count
                return got
        return None

    def read_new(self) -> tuple[list[tuple[np.ndarray, FrameMeta]], int]:
        """Every complete frame written since the last read, oldest first, and how many were lost
        (overwritten before we got to them)."""
        end = self.written
        start = max(self._last_read + 1, end - self.spec.slots + 1)
        lost = start - (self._last_read + 1)
        frames = []
        for count in range(start, end):
            got = self._read(count, None)
            if got is None:
                lost += 1
            else:
                frames.append(got)
        self._last_read = end - 1
        return frames, lost


class Doorbell:
    """Wakes a channel's reader without polling. Ringing never blocks; waiting drains the rings."""

    def __init__(self, ctx: Any):
        self._sem = ctx.Semaphore(0)

    def ring(self) -> None:
        try:
            self._sem.release()
        except (ValueError, OverflowError):  # counter at its maximum: the reader is far behind anyway
            pass

    def wait(self, timeout: float) -> bool:
        """True when rung before `timeout` seconds."""
        rung = self._sem.acquire(timeout=max(0.0, timeout))
        while rung and self._sem.acquire(False):
            pass
        return rung
