"""Benchmarks behind `fluxrt-cam bench ...`: each returns a JSON-able dict and prints a table."""
from __future__ import annotations

import time
from typing import Any


def device_label(device) -> str:
    """What a benchmark ran on, for its JSON and table: "cuda:0 (NVIDIA H100 80GB HBM3)" or
    "cpu (<model name>, 16 torch threads)". `device`: a torch.device or its string ("cuda" means cuda:0)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    if dev.type != "cpu":
        return str(dev)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} torch threads)"


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else "unknown model"."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown model")
    except OSError:
        return "unknown model"


class BenchProgress:
    """What a benchmark is doing and how far it is, as one rich bar on stderr (stdout stays free for the
    table or the JSON). Disabled, every call is a no-op, so the benchmarks call it unconditionally.

    Use: `with BenchProgress(enabled) as p: run(..., progress=p)`; the benchmark sets the total it knows
    (`start`), names each piece of work before it runs it (`doing`) and counts it when done (`advance`)."""

    def __init__(self, enabled: bool = True) -> None:
        self._bar: Any = None
        self._task: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self) -> BenchProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._bar is not None:
            if exc_type is None:
                self.doing("done")  # not the last step's name: that one has finished
            self._bar.stop()

    def start(self, total: float, what: str) -> None:
        if self._bar is None:
            return
        if self._task is None:
            self._task = self._bar.add_task(what, total=total)
        else:
            self._bar.reset(self._task, total=total, description=what)

    def doing(self, what: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, description=what)

    def advance(self, amount: float = 1.0) -> None:
        if self._task is not None:
            self._bar.advance(self._task, amount)

    def wait(self, seconds: float, what: str, amount: float = 1.0) -> None:
        """Sleep `seconds` (a measurement window), moving the bar `amount` steps along meanwhile so that
        a long window does not look like a hang."""
        self.doing(what)
        if self._task is None or seconds <= 0:
            time.sleep(max(0.0, seconds))
            self.advance(amount)
            return
        end = time.monotonic() + seconds
        done = 0.0
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.25, left))
            now = amount * min(1.0, 1.0 - (end - time.monotonic()) / seconds)
            self.advance(now - done)
            done = now
        self.advance(amount - done)


def no_progress() -> BenchProgress:
    return BenchProgress(enabled=False)
