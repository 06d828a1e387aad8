"""Doubling retry delay, shared by everything that reconnects or restarts (camera, OBS, child processes)."""
from __future__ import annotations


class Backoff:
    """first_s, 2 * first_s, 4 * first_s ... capped at max_s; `reset()` once the thing works again, so the
    next failure is retried quickly instead of after the long delay an earlier outage built up."""

    def __init__(self, first_s: float, max_s: float) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"backoff needs 0 < first_s <= max_s, got first_s={first_s}, max_s={max_s}")
        self.first_s, self.max_s = first_s, max_s
        self._delay = first_s

    def next(self) -> float:
        """The delay to wait before this retry; the one after it doubles (up to max_s)."""
        delay = self._delay
        self._delay = min(delay * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._delay = self.first_s
