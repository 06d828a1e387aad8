"""Global hotkeys (pynput) that switch the daemon's presets from anywhere on the desktop.

ctrl+alt+1..9 apply presets 1..9 (config order), ctrl+alt+n / ctrl+alt+p the next / previous one.
Needs a desktop session: X11 (or XWayland) on Linux, any session on Windows/macOS. pynput is optional
(`pip install 'fluxrt-cam[hotkeys]'`). Key presses only queue work: the requests run on one worker
thread, so a slow daemon never stalls the keyboard listener.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable

from vcam.control.client import ControlRequestError, DaemonClient, DaemonUnavailable

Action = tuple[str, int | str]  # ("preset", number: 1 = the first) | ("preset", "next" | "prev")


class HotkeysUnavailable(RuntimeError):
    """No desktop session or no pynput; the message says what to do."""


def bindings(slots: int = 9) -> dict[str, Action]:
    """pynput hotkey strings -> actions."""
    keys: dict[str, Action] = {f"<ctrl>+<alt>+{i}": ("preset", i) for i in range(1, min(slots, 9) + 1)}
    keys["<ctrl>+<alt>+n"] = ("preset", "next")
    keys["<ctrl>+<alt>+p"] = ("preset", "prev")
    return keys


def check_display() -> None:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise HotkeysUnavailable("global hotkeys need a desktop session (no DISPLAY is set); use the OBS script's "
                                 "hotkeys or `fluxrt-cam preset` instead")


class GlobalHotkeys:
    """Listens for `bindings()` and applies them through `client`; `report(line)` hears what happened."""

    def __init__(self, client: DaemonClient, report: Callable[[str], None] = print, slots: int = 9):
        check_display()
        try:
            from pynput import keyboard
        except ImportError:
            raise HotkeysUnavailable("global hotkeys need pynput: pip install 'fluxrt-cam[hotkeys]'") from None
        self.client, self.report = client, report
        self._jobs: queue.Queue[Action | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="hotkeys", daemon=True)
        self._bindings = bindings(slots)
        handlers = {combo: (lambda c=combo: self.trigger(c)) for combo in self._bindings}
        try:
            self._listener = keyboard.GlobalHotKeys(handlers)
        except Exception as e:  # noqa: BLE001 - e.g. an X server that refuses the connection
            raise HotkeysUnavailable(f"cannot listen to the keyboard: {e}") from None

    def start(self) -> "GlobalHotkeys":
        self._worker.start()
        self._listener.start()
        self._listener.wait()
        return self

    def stop(self) -> None:
        # on X11 pynput's listener thread notices the stop only at the next key event; it is a daemon thread
        self._listener.stop()
        self._jobs.put(None)
        self._worker.join(2)

    def trigger(self, combo: str) -> None:
        """What pressing `combo` (e.g. "<ctrl>+<alt>+1") does: queue its action for the worker."""
        self._jobs.put(self._bindings[combo])

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the listener to end; True when it has."""
        self._listener.join(timeout)
        return not self._listener.is_alive()

    def _work(self) -> None:
        while (action := self._jobs.get()) is not None:
            try:
                s = self.client.apply_preset(action[1])
                self.report(f"preset {s['preset']!r} (prompt_version {s['prompt_version']})")
            except (DaemonUnavailable, ControlRequestError) as e:
                self.report(f"error: {e}")
