"""Shared helpers for tests that run the real daemon (processes, shared memory, camera backend)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vcam.config import Config, load_config
from vcam.shm import segment_owner

BACKEND = "tests.camera_backend:RecordingBackend"


def shm_names(owner: int | None = None) -> set[str]:
    """The shared-memory segments owned by process `owner` (default: this one, the supervisor of an in-process
    daemon). Only those: other tests and other daemons on the machine have theirs."""
    owner = os.getpid() if owner is None else owner
    return {f for f in os.listdir("/dev/shm") if segment_owner(f) == owner and not f.startswith("sem.")}


def semaphore_names(owner: int) -> set[str]:
    """The multiprocessing semaphores of process `owner` (named after it: vcam.shm.name_semaphores)."""
    return {f for f in os.listdir("/dev/shm") if f.startswith("sem.") and segment_owner(f) == owner}


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


# the camera size of most daemon tests: 16:9 like the default 1280x720, but cheap to fit, checksum and log 30
# times a second on a busy machine (tests/test_output_shape.py runs one daemon at the default size)
SMALL_OUTPUT = (160, 90)


def daemon_config(camera_log: Path, output_size: tuple[int, int] | None = SMALL_OUTPUT, **overrides: Any) -> Config:
    """A small, fast daemon: passthrough engine, synthetic source, the recording camera backend. The camera gets
    `output_size` (width, height) frames; None keeps the configured default (output.width, output.height)."""
    os.environ["FLUXRT_TEST_CAMERA_LOG"] = str(camera_log)  # inherited by the spawned output process
    base = {
        "engine.name": "passthrough", "engine.width": 128, "engine.height": 96,
        "source.kind": "synthetic", "source.capture_width": 320, "source.capture_height": 240, "source.fps": 30,
        "interpolation.method": "none", "output.fps": 30, "output.virtual_camera": "on",
        "output.camera_backend": BACKEND, "control.enabled": False, "log_level": "warning",
    }
    if output_size is not None:
        base["output.width"], base["output.height"] = output_size
    base.update(overrides)
    return load_config(None, base)


def shown_prompt_version(daemon: Any) -> int | None:
    """prompt_version of the last frame the output process sent (None before the first one)."""
    return (daemon.status()["output"].get("last_frame") or {}).get("prompt_version")
