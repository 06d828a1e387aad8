"""What every child process shares: its links to the supervisor, its heartbeat, dying with its parent,
logging, and dying loudly.

`child_main` is the spawn target. This module imports nothing heavy, so a new child starts beating
(phase STARTING) before its worker module pulls in torch or OpenCV.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vcam.messages import ChildError, ChildStatus
from vcam.shm import ChannelSpec, Doorbell
from vcam.supervisor.heartbeat import HeartbeatSpec, Heartbeats, Pulse

if TYPE_CHECKING:
    from vcam.config import Config

STOP = "stop"  # sent on a child's control queue to end it
RESET_STATS = "reset-stats"  # output process: start the latency / interval statistics afresh


@dataclass
class Links:
    """A child's shared memory and queues (picklable for the spawn start method)."""

    input: ChannelSpec
    input_bell: Doorbell
    output: ChannelSpec
    output_bell: Doorbell
    control: Any  # multiprocessing.Queue: Settings, notices, STOP  (supervisor -> child)
    status: Any  # multiprocessing.Queue: ChildStatus / ChildError  (child -> supervisor)
    beats: HeartbeatSpec | None = None
    slot: int = 0  # this child's heartbeat row
    activate: Any = None  # multiprocessing.Event: set when a standby output process takes over


# role -> the worker module's main(cfg, links, pulse); imported inside the child, under a STARTING heartbeat
WORKERS = {"inference": "vcam.inference.worker:inference_main", "output": "vcam.output.worker:output_main"}
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Be killed (SIGKILL) when the supervisor dies, even if this process is hung or stopped. Linux:
    PR_SET_PDEATHSIG, which fires when the *thread* that spawned us ends: the supervisor spawns from its
    watchdog thread, which lives until every child is stopped. Elsewhere: a thread that watches the
    parent's PID and exits (it cannot help a stopped process)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != parent:  # the parent died before the call took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def child_main(role: str, cfg: "Config", links: Links) -> None:
    """The spawn target of every child: die with the parent, beat while the worker module loads, run it."""
    die_with_parent()
    pulse = Pulse(Heartbeats.attach(links.beats), links.slot) if links.beats is not None else Pulse()
    module, name = WORKERS[role].split(":")
    with pulse.starting():
        main = getattr(importlib.import_module(module), name)
    main(cfg, links, pulse)


def run_child(role: str, links: Links, log_level: str, body: Callable[[], None]) -> None:
    """Run `body` as the child's main; report an exception's traceback to the supervisor, then die."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    try:
        body()
    except BaseException as e:
        links.status.put(ChildError(role, time.time(), f"{type(e).__name__}: {e}", traceback.format_exc(), os.getpid()))
        links.status.close()
        links.status.join_thread()  # make sure the report leaves before we die
        raise


def parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


def drain(q: Any) -> list[Any]:
    items = []
    while True:
        try:
            items.append(q.get_nowait())
        except queue.Empty:
            return items


def report(links: Links, role: str, values: dict[str, Any]) -> None:
    links.status.put(ChildStatus(role, time.time(), values, os.getpid()))
