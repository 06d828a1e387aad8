"""Presentation scheduling for the output process.

The inference process publishes engine outputs in *groups*: the k-1 interpolated frames between the
previous engine frame and the new one, then the new engine frame (index k-1). The scheduler gives
every frame a presentation time so a group plays evenly over the measured engine interval:

    pts(group n, frame i) = base_n + i * I / k          I: engine interval (median of recent group arrival gaps)
    base_n = clamp(pts of the previous frame + I / k, arrival_n, arrival_n + I / (2k))   (k > 1)
    base_n = arrival_n                                                                   (k = 1)

Times are monotonic. Arrival jitter below half a slot is absorbed (the group starts exactly one slot
after the previous one); a late group starts on arrival. When a group arrives while frames of the
previous one are still waiting, the previous run is shortened: its remaining interpolated frames are
dropped, its engine frame is shown next, so no engine frame is lost and groups never interleave.

When nothing is due, the sinks are kept fed at their fps with the last frame (`keepalive`).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vcam.shm import FrameMeta


@dataclass
class Scheduled:
    pts: float
    frame: np.ndarray
    meta: FrameMeta


class PresentationScheduler:
    def __init__(self, fps: float, window: int = 9):
        self.keepalive = 1.0 / fps
        self.deltas: deque[float] = deque(maxlen=window)
        self.long_gaps = 0  # consecutive arrival gaps far above the estimate
        self.interval: float | None = None  # engine interval estimate, seconds
        self.pending: deque[Scheduled] = deque()
        self.last_arrival: float | None = None
        self.last_pts: float | None = None
        self.dropped_interpolated = 0
        self._partial: list[tuple[np.ndarray, FrameMeta]] = []  # the group being read, until its engine frame

    def push_frames(self, frames: list[tuple[np.ndarray, FrameMeta]], now: float) -> int:
        """Frames as read from the OUTPUT channel (oldest first): each group is scheduled once its engine frame
        (its last) is in; returns how many groups that completed."""
        groups = 0
        for frame, meta in frames:
            if self._partial and self._partial[-1][1].group != meta.group:
                self._partial = []  # the rest of that group was lost: never play half a group late
            self._partial.append((frame, meta))
            if meta.is_engine_frame:
                self.push_group(self._partial, now)
                self._partial = []
                groups += 1
        return groups

    def push_group(self, frames: list[tuple[np.ndarray, FrameMeta]], now: float) -> None:
        """Schedule a complete group (oldest first; the last one is the engine frame)."""
        if not frames:
            return
        if self.last_arrival is not None:
            dt = now - self.last_arrival
            # a gap of several intervals is a stall (restart, pause), not a rate: leave it out; but
            # several in a row mean the engine really slowed down (more steps, cache off): start over
            if dt > 0 and self.deltas and dt >= 3 * float(np.median(self.deltas)):
                self.long_gaps += 1
                if self.long_gaps >= 3:
                    self.deltas.clear()
            if dt > 0 and (not self.deltas or dt < 3 * float(np.median(self.deltas))):
                self.deltas.append(dt)
                self.long_gaps = 0
        if len(self.deltas) >= 3:
            # the median of recent arrival gaps: a noisy estimate makes every slot of a group wrong
            # by the same amount, and the error accumulates into phase drift
            self.interval = float(np.median(self.deltas))
        elif frames[-1][1].engine_interval > 0:
            self.interval = frames[-1][1].engine_interval  # the inference process's own estimate
        self.last_arrival = now
        # shorten the current run: keep only its engine frames
        if self.pending:
            kept = [s for s in self.pending if s.meta.is_engine_frame]
            self.dropped_interpolated += len(self.pending) - len(kept)
            self.pending = deque(kept)
            for s in self.pending:
                s.pts = min(s.pts, now)
        k = len(frames)
        slot = self.interval / k if self.interval else 0.0
        if self.pending:
            base = now + slot / 2  # right after the shortened run's engine frame
        elif self.last_pts is None or k == 1:
            base = now  # nothing to spread: show it at once (latency first)
        else:
            base = min(max(self.last_pts + slot, now), now + slot / 2)
        for i, (frame, meta) in enumerate(frames):
            self.pending.append(Scheduled(base + i * slot, frame, meta))

    def next_due(self) -> float | None:
        return self.pending[0].pts if self.pending else None

    def pop_due(self, now: float) -> Scheduled | None:
        """The frame to show now, if one is due (the newest due one is not skipped ahead to: frames
        are shown in order, one per call, so none is lost)."""
        if self.pending and self.pending[0].pts <= now:
            s = self.pending.popleft()
            self.last_pts = s.pts
            return s
        return None

    def keepalive_after(self, last_was_new: bool) -> float:
        """Seconds after the last send before the last frame is repeated. After a new frame we allow
        half a frame of grace, so an engine running at about the sinks' fps is never answered with a
        repeat a moment before its next frame (that would show up as jitter)."""
        return self.keepalive * (1.5 if last_was_new else 1.0)

    def wake_time(self, last_send: float, last_was_new: bool) -> float:
        """When the output loop should wake next: the next frame's time, or the keepalive time."""
        keep = last_send + self.keepalive_after(last_was_new)
        due = self.next_due()
        return keep if due is None else min(due, keep)
