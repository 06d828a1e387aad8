"""Supervisor: owns every shared-memory segment, starts the children, restarts dead and hung ones.

A child that dies (exception, crash, kill -9) is restarted within a fraction of a second the first
time; repeated crashes back off exponentially (capped) instead of looping hot; a child that stayed
up for a while starts again from the shortest delay. A child whose heartbeat (vcam/supervisor/heartbeat.py)
stops for longer than `watchdog.timeout_s` - hung, deadlocked, stopped - is killed with SIGKILL and
restarted the same way. The last error and traceback are kept for status.

The output process has a warm standby: a second output process, started and set up, that takes over the
moment the serving one dies, so the virtual camera is back within a fraction of a second (a fresh process
needs seconds for its imports on a busy machine). A new standby is then started in the background.

Every child is spawned from the watchdog thread, and that thread stops the children before it ends:
Linux's parent-death signal (vcam/supervisor/child.py) fires when the spawning thread ends.
"""
from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vcam.backoff import Backoff
from vcam.config import Config
from vcam.fallbacks import BACKOFF_FIRST_S, BACKOFF_MAX_S, HEALTHY_AFTER_S, status_text
from vcam.messages import ChildError, ChildStatus, Settings
from vcam.shm import Doorbell, FrameChannel, name_semaphores, remove_stale_segments
from vcam.supervisor.child import RESET_STATS, STOP, Links, child_main
from vcam.supervisor.heartbeat import PHASES, STARTING, Heartbeats

log = logging.getLogger(__name__)

OUTPUT_SLOTS = 2 * 16 + 4  # two groups of the largest interpolation factor, and room
INFERENCE_ROW, OUTPUT_ROW, STANDBY_ROW = 0, 1, 2  # heartbeat rows; a child keeps its row when promoted


@dataclass
class Child:
    role: str  # "inference" or "output"
    row: int  # its heartbeat row
    links: Links
    proc: Any = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    killed_for: str | None = None  # why the watchdog killed it (no heartbeat)
    last_error: str | None = None
    last_traceback: str | None = None
    reported: str | None = None  # the exception a dying child sent, until its death is seen
    values: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ctx = mp.get_context("spawn")  # torch and threads do not survive fork
        name_semaphores()  # before the first queue: semaphores named with our PID, found if we die whole
        stale = remove_stale_segments()
        if stale:
            owners = sorted({s.owner for s in stale})
            sems = sum(s.name.startswith("sem.") for s in stale)
            log.warning("removed %d shared-memory segment(s) (%.0f MB) and %d semaphore(s) left behind by "
                        "process(es) %s that died without cleaning up", len(stale) - sems,
                        sum(s.size for s in stale) / 1e6, sems, owners)
        w, h = cfg.engine.width, cfg.engine.height
        self.input = FrameChannel.create("input", w, h, slots=3)
        try:
            self.output = FrameChannel.create("output", w, h, slots=OUTPUT_SLOTS)
            try:
                self.beats = Heartbeats.create(3)
            except BaseException:
                self.output.close()
                raise
        except BaseException:
            self.input.close()
            raise
        self.input_bell, self.output_bell = Doorbell(self.ctx), Doorbell(self.ctx)
        self.status_q = self.ctx.Queue()
        self.children = {"inference": self._child("inference", INFERENCE_ROW),
                         "output": self._child("output", OUTPUT_ROW)}
        self.spare = self._child("output", STANDBY_ROW, standby=True)
        self.backoff = {role: Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S) for role in self.children}
        self.settings: Settings | None = None
        self._notices: dict[str, str] = {}  # "engine" / "source" -> a line for the status cards
        # their text, one per line (None: none), derived under the lock: the stream thread reads it freely
        self.notice_text: str | None = None
        self._heirs: dict[int, Child] = {}  # a dead output's PID -> the standby that took over from it
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._spawned = threading.Event()
        self._spawn_error: BaseException | None = None
        self._watchdog: threading.Thread | None = None
        self._collector: threading.Thread | None = None

    def _child(self, role: str, row: int, standby: bool = False) -> Child:
        links = Links(self.input.spec, self.input_bell, self.output.spec, self.output_bell, None, self.status_q,
                      self.beats.spec, row, self.ctx.Event() if standby else None)
        return Child(role, row, links)

    def _all(self) -> list[Child]:
        return [*self.children.values(), self.spare]

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self, settings: Settings) -> None:
        self.settings = settings
        self._collector = threading.Thread(target=self._collect, name="status", daemon=True)
        self._collector.start()
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._watchdog.start()
        self._spawned.wait()
        if self._spawn_error is not None:
            raise self._spawn_error

    def _spawn(self, child: Child) -> None:
        # a fresh control queue: a dead child may have left a half-read one behind. Under the lock, so
        # settings pushed meanwhile land in the new queue after the current ones
        with self._lock:
            old = child.links.control
            if old is not None:  # the dead child's queue: do not wait for its feeder thread, free it now
                old.cancel_join_thread()
                old.close()
            child.links.control = self.ctx.Queue()
            if self.settings is not None:
                child.links.control.put(self.settings)
            if child.role == "output":
                child.links.control.put({"notice": self.notice_text})
        if old is not None:
            # a queue's and an event's named semaphores go when the objects are freed; some sit in reference
            # cycles, so collect now rather than let /dev/shm collect semaphores between collector runs
            del old
            gc.collect()
        self.beats.reset(child.row)
        child.proc = self.ctx.Process(target=child_main, args=(child.role, self.cfg, child.links),
                                      name=f"fluxrt-{child.role}", daemon=True)
        child.proc.start()
        child.started_at = time.monotonic()
        child.restart_at = None
        child.killed_for = None

    def push(self, settings: Settings) -> None:
        """Send new settings to every child (the ControlState listener)."""
        with self._lock:
            self.settings = settings
            for child in self._all():
                if child.links.control is not None:
                    child.links.control.put(settings)

    def reset_output_stats(self) -> None:
        self.children["output"].links.control.put(RESET_STATS)

    def notice(self, text: str | None, key: str = "engine") -> None:
        """Set (or with None clear) one notice line for the status cards on the camera and the stream."""
        with self._lock:
            if text:
                self._notices[key] = text
            else:
                self._notices.pop(key, None)
            self.notice_text = "\n".join(v for _, v in sorted(self._notices.items())) or None
            for child in (self.children["output"], self.spare):
                if child.links.control is not None:
                    child.links.control.put({"notice": self.notice_text})

    def stop(self) -> None:
        """Stop the children, then unlink every segment. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._watchdog is not None:  # it stops the children (it spawned them)
            self._watchdog.join(timeout=15.0)
        else:
            self._stop_children()
        if self._collector is not None:
            self._collector.join(timeout=1.0)
        self.input.close()
        self.output.close()
        self.beats.close()

    def _stop_children(self) -> None:
        for child in self._all():
            if child.proc is not None and child.proc.is_alive():
                child.links.control.put(STOP)
        deadline = time.monotonic() + 3.0
        for child in self._all():
            if child.proc is None or child.proc.pid is None:  # never started
                continue
            child.proc.join(max(0.0, deadline - time.monotonic()))
            if child.proc.is_alive():
                child.proc.terminate()
                child.proc.join(1.0)
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join(1.0)

    # ---- the watchdog thread -----------------------------------------------------------------------
    def _watch(self) -> None:
        try:
            for child in self._all():
                self._spawn(child)
        except BaseException as e:  # start() raises it
            self._spawn_error = e
            self._stopping.set()
        finally:
            self._spawned.set()
        try:
            while not self._stopping.is_set():
                # wake at once when a child exits (its sentinel), else every 50 ms for the heartbeats
                sentinels = [c.proc.sentinel for c in self._all() if c.proc is not None and c.restart_at is None]
                multiprocessing.connection.wait(sentinels, timeout=0.05)
                if self._stopping.is_set():
                    break
                now = time.monotonic()
                for child in self._all():
                    self._check(child, now)
        finally:
            self._stop_children()

    def _check(self, child: Child, now: float) -> None:
        if child.proc is None:
            return
        if child.proc.is_alive():
            if child.restart_at is None and child.killed_for is None:
                self._check_heartbeat(child, now)
            return
        if child.restart_at is None:
            self._died(child, now)
        elif now >= child.restart_at:
            child.restarts += 1
            self._spawn(child)
            if child.role == "inference":
                self.notice(None)

    def _check_heartbeat(self, child: Child, now: float) -> None:
        w = self.cfg.watchdog
        beat = self.beats.read(child.row)
        limit = w.start_timeout_s if beat.phase == STARTING else w.timeout_s
        silent = now - beat.ts
        if silent > limit:
            child.killed_for = status_text("child_hung", silent=f"{silent:.1f}", limit=f"{limit:g}")
            log.error("%s process %s", self._name(child), child.killed_for)
            try:
                os.kill(child.proc.pid, signal.SIGKILL)  # also ends a stopped (SIGSTOP) process
            except ProcessLookupError:
                pass

    def _name(self, child: Child) -> str:
        return "standby output" if child is self.spare else child.role

    def _died(self, child: Child, now: float) -> None:
        code = child.proc.exitcode
        why = child.killed_for or (f"killed by signal {-code}" if code is not None and code < 0
                                   else f"exited with code {code}")
        child.last_error = f"{why}: {child.reported}" if child.reported else why
        child.reported = None
        backoff = self.backoff[child.role]
        if now - child.started_at > HEALTHY_AFTER_S:
            backoff.reset()
        if child is self.children["output"] and self.spare.proc is not None and self.spare.proc.is_alive():
            self._promote_spare(child, now)
            return
        delay = backoff.next()
        child.restart_at = now + delay
        log.error("%s process %s; restarting in %.1f s", self._name(child), why, delay)
        if child.role == "inference":
            self.notice(f"engine restarting ({why})")

    def _promote_spare(self, dead: Child, now: float) -> None:
        """The standby takes over the camera now; the dead one's slot becomes the next standby."""
        spare = self.spare
        spare.links.activate.set()
        spare.restarts, spare.last_error, spare.last_traceback = dead.restarts + 1, dead.last_error, dead.last_traceback
        dead.links.activate = self.ctx.Event()  # the dead one's record becomes the new (not yet started) standby
        # its dying words (ChildError) may still be on their way, and arrive within moments: to the heir
        self._heirs = {dead.proc.pid: spare}
        dead.restarts, dead.values, dead.last_error, dead.last_traceback = 0, {}, None, None
        self.children["output"], self.spare = spare, dead
        delay = self.backoff["output"].next()  # a crash loop slows down here, the camera is not kept waiting
        dead.restart_at = now + delay
        log.error("output process %s; the standby took over, a new standby starts in %.1f s", spare.last_error, delay)

    # ---- status ----------------------------------------------------------------------------------
    def _collect(self) -> None:
        while not self._stopping.is_set():
            try:
                msg = self.status_q.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            except Exception:  # noqa: BLE001 - an unreadable message must not end status updates
                log.exception("bad status message")
                continue
            pid = getattr(msg, "pid", None)
            heir = self._heirs.pop(pid, None) if isinstance(msg, ChildError) else None  # a dead output's error
            child = heir or next((c for c in self._all() if c.proc is not None and c.proc.pid == pid), None)
            if child is None:
                continue
            if isinstance(msg, ChildStatus):
                child.values = msg.values
            elif isinstance(msg, ChildError):
                child.last_traceback = msg.traceback
                log.error("%s process failed: %s\n%s", self._name(child), msg.error, msg.traceback)
                if heir is not None or child.restart_at is not None:  # its death was seen first
                    child.last_error = f"{child.last_error}: {msg.error}"
                else:
                    child.reported = msg.error

    def _child_status(self, c: Child) -> dict[str, Any]:
        alive = bool(c.proc is not None and c.proc.is_alive())
        beat = self.beats.read(c.row)
        return {
            "alive": alive,
            "pid": c.proc.pid if c.proc is not None else None,
            "heartbeat_phase": PHASES.get(beat.phase) if alive else None,  # starting | running | standby
            "heartbeat_age_s": round(time.monotonic() - beat.ts, 2) if alive else None,
            "restarts": c.restarts,
            "last_error": c.last_error,
            "last_traceback": c.last_traceback,
        }

    def status(self) -> dict[str, Any]:
        out = {role: {**self._child_status(c), **c.values} for role, c in self.children.items()}
        spare = self._child_status(self.spare)
        out["output"]["standby"] = {"alive": spare["alive"], "pid": spare["pid"], "phase": spare["heartbeat_phase"],
                                    "last_error": spare["last_error"]}
        return out
