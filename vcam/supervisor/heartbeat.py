"""Heartbeats through shared memory: one row per child (beat count, time of the last beat, phase).

A queue cannot tell a hung child from a quiet one, and a stopped (SIGSTOP) or deadlocked child still
looks alive to `is_alive()`. So each child writes its row as it works; the supervisor reads the rows and
kills (SIGKILL) a child whose row has not moved for longer than its phase allows. Times are
`time.monotonic()` (CLOCK_MONOTONIC: the same clock in every process).

Phases: STARTING (interpreter start, imports, model loading and compiling, the first edit: a helper thread
beats, and the supervisor allows `watchdog.start_timeout_s` of silence, since one long C call such as
loading a shared library holds the GIL); RUNNING (the child's own loop beats, and during an edit a helper
beats while the process uses CPU, see `Pulse.busy`; `watchdog.timeout_s`); STANDBY (a spare output process
waiting to take over; same limit as RUNNING).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from vcam.shm import attach_segment, new_segment_name

STARTING, RUNNING, STANDBY = 0, 1, 2
PHASES = {STARTING: "starting", RUNNING: "running", STANDBY: "standby"}
BEAT_EVERY_S = 0.25  # the STARTING helper thread's pace
MIN_CPU_S = 0.005  # CPU seconds per beat interval that count as work going on (`busy`)


@dataclass(frozen=True)
class HeartbeatSpec:
    name: str
    slots: int


@dataclass(frozen=True)
class Beat:
    count: int  # beats since the slot was reset (0: none yet)
    ts: float  # time.monotonic() of the last beat (or of the reset)
    phase: int


class Heartbeats:
    """`slots` rows of float64 (count, ts, phase). The supervisor creates and owns the segment."""

    def __init__(self, shm: SharedMemory, spec: HeartbeatSpec, owner: bool):
        self.spec, self._shm, self.owner = spec, shm, owner
        self._rows = np.ndarray((spec.slots, 3), np.float64, shm.buf, 0)  # (slot, [count, ts, phase])

    @classmethod
    def create(cls, slots: int) -> "Heartbeats":
        spec = HeartbeatSpec(new_segment_name("beats"), slots)
        hb = cls(SharedMemory(name=spec.name, create=True, size=slots * 3 * 8), spec, owner=True)
        hb._rows[:] = 0
        return hb

    @classmethod
    def attach(cls, spec: HeartbeatSpec) -> "Heartbeats":
        return cls(attach_segment(spec.name), spec, owner=False)

    def reset(self, slot: int) -> None:
        """Before (re)spawning the slot's child: no beats yet, silence counted from now."""
        self._rows[slot] = (0.0, time.monotonic(), STARTING)

    def beat(self, slot: int, phase: int) -> None:
        row = self._rows[slot]
        row[2] = phase
        row[1] = time.monotonic()
        row[0] += 1  # last: a reader that sees the new count sees the new time (x86 store order)

    def read(self, slot: int) -> Beat:
        count, ts, phase = (float(v) for v in self._rows[slot])
        return Beat(int(count), ts, int(phase))

    def close(self) -> None:
        self._rows = None  # type: ignore[assignment]  # drop the view before closing the buffer
        self._shm.close()
        if self.owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass


class Pulse:
    """A child's side of its heartbeat row: `beat()` from its loop; `starting()` around slow work."""

    def __init__(self, beats: Heartbeats | None = None, slot: int = 0):
        self.beats, self.slot = beats, slot
        self._phase = RUNNING
        self._helpers = 0
        self._lock = threading.Lock()
        self._busy = threading.Event()  # set while a `busy()` block runs
        self._cpu_watch: threading.Thread | None = None

    def beat(self, phase: int = RUNNING) -> None:
        if self.beats is not None and not self._helpers:  # while a STARTING helper beats, it owns the row
            self.beats.beat(self.slot, phase)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around one unit of work of unbounded length (an edit on a loaded machine can take seconds): a
        helper thread beats (phase RUNNING) while the process uses CPU, so slow work is not taken for a
        hang, while a deadlock, a wait that never returns or a stopped process (no CPU) still goes silent.
        One helper thread for the life of the process (this runs around every frame), idle between edits."""
        if self.beats is None:
            yield
            return
        if self._cpu_watch is None:
            self._cpu_watch = threading.Thread(target=self._beat_while_computing, name="heartbeat-busy", daemon=True)
            self._cpu_watch.start()
        self._busy.set()
        try:
            yield
        finally:
            self._busy.clear()
        self.beat()

    def _beat_while_computing(self) -> None:
        used = time.process_time()
        while True:
            self._busy.wait()
            time.sleep(BEAT_EVERY_S)
            now_used = time.process_time()  # CPU time of the whole process, all threads
            if self._busy.is_set() and now_used - used >= MIN_CPU_S:
                self.beat()  # through the gate: while a STARTING helper runs (first edit), it owns the row
            used = now_used

    @contextmanager
    def starting(self) -> Iterator[None]:
        """Beat from a helper thread, phase STARTING, while the block runs: imports, model loading,
        compiling, warm-up. A helper thread keeps beating even if the block hangs; the supervisor's
        longer STARTING limit and the phase shown in `status` are what remain of the check then."""
        with self._lock:
            self._helpers += 1
        try:
            with self._helper(lambda: self.beats.beat(self.slot, STARTING), "heartbeat"):  # type: ignore[union-attr]
                yield
        finally:
            with self._lock:
                self._helpers -= 1
        self.beat()

    @contextmanager
    def _helper(self, step: Callable[[], None], name: str) -> Iterator[None]:
        """Run `step` now and every BEAT_EVERY_S on a daemon thread while the block runs (no-op unattached)."""
        if self.beats is None:
            yield
            return
        done = threading.Event()

        def loop() -> None:
            step()
            while not done.wait(BEAT_EVERY_S):
                step()

        t = threading.Thread(target=loop, name=name, daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()
