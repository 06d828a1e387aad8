"""Virtual camera sink (pyvirtualcam), with device discovery by label and the exact fix when absent."""
from __future__ import annotations

import importlib
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyvirtualcam

from vcam.fallbacks import CAMERA_RETRY_S

log = logging.getLogger(__name__)

SYSFS_VIDEO = Path("/sys/class/video4linux")
RETRY_S = CAMERA_RETRY_S  # vcam/fallbacks.py POLICY["virtual_camera"]


def modprobe_command(label: str, video_nr: int = 10) -> str:
    # exclusive_caps=1: Chrome, Meet and Zoom list only devices that announce capture-only caps
    return f'sudo modprobe v4l2loopback devices=1 video_nr={video_nr} card_label="{label}" exclusive_caps=1'


def find_v4l2_device(label: str, sysfs: Path = SYSFS_VIDEO) -> str | None:
    """The /dev/videoN whose v4l2 name is `label` (another producer may hold another loopback)."""
    if not sysfs.is_dir():
        return None
    for entry in sorted(sysfs.glob("video*")):
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            continue
        if name == label:
            return f"/dev/{entry.name}"
    return None


class NullBackend:
    """A pyvirtualcam backend that discards frames: for measuring the pipeline without a device."""

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: Any):
        self._device = device or "null"

    def send(self, frame: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


def _resolve_backend(spec: str) -> str:
    """'null', a registered backend name, or 'package.module:Class' to register one."""
    if spec == "null":
        pyvirtualcam.register_backend("null", NullBackend)
        return "null"
    if ":" in spec:
        module, cls = spec.split(":", 1)
        pyvirtualcam.register_backend(spec, getattr(importlib.import_module(module), cls))
    return spec


def choose_device(label: str, backend: str | None,
                  sysfs: Path = SYSFS_VIDEO) -> tuple[str | None, str | None, str | None]:
    """(backend, device, error): what to open on this platform, or why nothing can be."""
    if backend is not None:
        return backend, None, None
    system = platform.system()
    if system == "Linux":
        device = find_v4l2_device(label, sysfs)
        if device is None:
            return None, None, (f"no v4l2loopback device named {label!r}; create it with: "
                                f"{modprobe_command(label)}  (or `fluxrt-cam setup-vcam --apply`)")
        return "v4l2loopback", device, None
    if system == "Windows":
        # Unity Capture registered under our label gives our own name; the OBS camera is the fallback
        return "unitycapture", label, None
    return "obs", None, None  # macOS: the OBS virtual camera (install OBS and start it once)


class VirtualCameraSink:
    """Opens the camera lazily and retries every few seconds while none can be opened."""

    def __init__(self, label: str, width: int, height: int, fps: float, backend: str | None = None,
                 required: bool = False):
        self.label, self.width, self.height, self.fps = label, width, height, fps
        self.required = required  # output.virtual_camera = "on": a missing device is an error, not a notice
        self._cam: pyvirtualcam.Camera | None = None
        self._next_try = 0.0
        self.status: dict[str, Any] = {"active": False, "device": None, "backend": None, "error": None, "frames": 0}
        self._backend_spec: str | None = None
        try:
            self._backend_spec = _resolve_backend(backend) if backend else None
        except (ImportError, AttributeError, ValueError) as e:  # a typo in the config: report, never crash-loop
            self._next_try = float("inf")
            self.status["error"] = (f"output.camera_backend = {backend!r} cannot be loaded ({e}); use 'null', a "
                                    "pyvirtualcam backend name, or 'package.module:Class'")
            log.error("%s", self.status["error"])

    def _open(self) -> None:
        self._next_try = time.monotonic() + RETRY_S
        backend, device, error = choose_device(self.label, self._backend_spec)
        if error is None:
            try:
                self._cam = pyvirtualcam.Camera(self.width, self.height, self.fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                                device=device, backend=backend)
            except Exception as e:  # noqa: BLE001 - every backend failure is reported the same way
                if backend == "unitycapture":
                    backend, device = "obs", None
                    try:
                        self._cam = pyvirtualcam.Camera(self.width, self.height, self.fps,
                                                        fmt=pyvirtualcam.PixelFormat.RGB, backend="obs")
                    except Exception as e2:  # noqa: BLE001
                        error = (f"no virtual camera: register Unity Capture as {self.label!r} or install OBS "
                                 f"Studio and start its virtual camera once ({e2})")
                else:
                    error = f"cannot open virtual camera {device or backend}: {e}"
        if self._cam is not None:
            self.status.update(active=True, device=self._cam.device, backend=self._cam.backend, error=None)
            log.info("virtual camera %r on %s (%s)", self.label, self._cam.device, self._cam.backend)
        else:
            if self.status["error"] != error:
                log.log(logging.ERROR if self.required else logging.WARNING, "%s", error)
            self.status.update(active=False, error=error)

    def send(self, frame: np.ndarray) -> None:
        if self._cam is None:
            if time.monotonic() < self._next_try:
                return
            self._open()
            if self._cam is None:
                return
        try:
            self._cam.send(frame)
            self.status["frames"] += 1
        except Exception as e:  # noqa: BLE001 - a device that went away: reopen later
            log.warning("virtual camera send failed: %s; reopening", e)
            self.close()
            self.status.update(active=False, error=str(e))

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.close()
            finally:
                self._cam = None
