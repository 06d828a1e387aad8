"""What every child process shares: its links to the supervisor, logging, and dying loudly."""
from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vcam.messages import ChildError, ChildStatus
from vcam.shm import ChannelSpec, Doorbell

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
    links.status.put(ChildStatus(role, time.time(), values))
