"""Supervisor: owns every shared-memory segment, starts the children, restarts dead ones.

A child that dies (exception, crash, kill -9) is restarted within a fraction of a second the first
time; repeated crashes back off exponentially (capped) instead of looping hot; a child that stayed
up for a while starts again from the shortest delay. The last error and traceback are kept for status.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from vcam.supervisor.child import RESET_STATS, STOP, Links
from vcam.backoff import Backoff
from vcam.config import Config
from vcam.inference.worker import inference_main
from vcam.messages import ChildError, ChildStatus, Settings
from vcam.output.worker import output_main
from vcam.shm import Doorbell, FrameChannel

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 30.0
OUTPUT_SLOTS = 2 * 16 + 4  # two groups of the largest interpolation factor, and room


@dataclass
class Child:
    role: str
    target: Callable[..., None]
    links: Links
    proc: Any = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S))
    restart_at: float | None = None
    last_error: str | None = None
    last_traceback: str | None = None
    reported: str | None = None  # the exception a dying child sent, until its death is seen
    values: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ctx = mp.get_context("spawn")  # torch and threads do not survive fork
        w, h = cfg.engine.width, cfg.engine.height
        self.input = FrameChannel.create("input", w, h, slots=3)
        self.output = FrameChannel.create("output", w, h, slots=OUTPUT_SLOTS)
        self.input_bell, self.output_bell = Doorbell(self.ctx), Doorbell(self.ctx)
        self.status_q = self.ctx.Queue()
        self.children = {
            role: Child(role, target, Links(self.input.spec, self.input_bell, self.output.spec, self.output_bell,
                                            self.ctx.Queue(), self.status_q))
            for role, target in (("inference", inference_main), ("output", output_main))
        }
        self.settings: Settings | None = None
        self.notice_text: str | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- life cycle ------------------------------------------------------------------------------
    def start(self, settings: Settings) -> None:
        self.settings = settings
        for child in self.children.values():
            self._spawn(child)
        for target, name in ((self._watch, "watchdog"), (self._collect, "status")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _spawn(self, child: Child) -> None:
        # a fresh control queue: a dead child may have left a half-read one behind. Under the lock, so
        # settings pushed meanwhile land in the new queue after the current ones
        with self._lock:
            child.links.control = self.ctx.Queue()
            if self.settings is not None:
                child.links.control.put(self.settings)
        child.proc = self.ctx.Process(target=child.target, args=(self.cfg, child.links), name=f"fluxrt-{child.role}",
                                      daemon=True)
        child.proc.start()
        child.started_at = time.monotonic()
        child.restart_at = None

    def push(self, settings: Settings) -> None:
        """Send new settings to every child (the ControlState listener)."""
        with self._lock:
            self.settings = settings
            for child in self.children.values():
                child.links.control.put(settings)

    def reset_output_stats(self) -> None:
        self.children["output"].links.control.put(RESET_STATS)

    def notice(self, text: str | None) -> None:
        """A line for the status cards (e.g. "engine restarting"); None clears it."""
        self.notice_text = text  # read by the control server's stream
        self.children["output"].links.control.put({"notice": text})

    def stop(self) -> None:
        """Stop the children, then unlink every segment. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for t in self._threads:  # the watchdog must not restart a child we are stopping
            t.join(timeout=1.0)
        for child in self.children.values():
            if child.proc is not None and child.proc.is_alive():
                child.links.control.put(STOP)
        deadline = time.monotonic() + 3.0
        for child in self.children.values():
            if child.proc is None or child.proc.pid is None:  # never started
                continue
            child.proc.join(max(0.0, deadline - time.monotonic()))
            if child.proc.is_alive():
                child.proc.terminate()
                child.proc.join(1.0)
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join(1.0)
        self.input.close()
        self.output.close()

    # ---- threads ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            for child in self.children.values():
                if child.proc is None or child.proc.is_alive():
                    continue
                if child.restart_at is None:
                    code = child.proc.exitcode
                    why = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
                    child.last_error = f"{why}: {child.reported}" if child.reported else why
                    child.reported = None
                    if now - child.started_at > HEALTHY_AFTER_S:
                        child.backoff.reset()
                    delay = child.backoff.next()
                    child.restart_at = now + delay
                    log.error("%s process %s; restarting in %.1f s", child.role, why, delay)
                    if child.role == "inference":
                        self.notice(f"engine restarting ({why})")
                elif now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                    if child.role == "inference":
                        self.notice(None)

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
            child = self.children.get(getattr(msg, "role", ""))
            if child is None:
                continue
            if isinstance(msg, ChildStatus):
                child.values = msg.values
            elif isinstance(msg, ChildError):
                child.last_traceback = msg.traceback
                log.error("%s process failed: %s\n%s", child.role, msg.error, msg.traceback)
                if child.restart_at is not None or msg.pid != child.proc.pid:  # its death was seen first
                    child.last_error = f"{child.last_error}: {msg.error}"
                else:
                    child.reported = msg.error

    # ---- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for role, c in self.children.items():
            out[role] = {
                "alive": bool(c.proc is not None and c.proc.is_alive()),
                "pid": c.proc.pid if c.proc is not None else None,
                "restarts": c.restarts,
                "last_error": c.last_error,
                "last_traceback": c.last_traceback,
                **c.values,
            }
        return out
