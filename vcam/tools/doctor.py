"""`fluxrt-cam doctor`: one row per thing the daemon depends on, with OK/FAIL and the fix.

A FAIL row makes the command exit with status 1 (scripts, CI, the install steps can rely on it); WARN is
for what only some set-ups need (CUDA, optional weights, OBS when the bridge is off) and does not fail it."""
from __future__ import annotations

import platform
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from vcam.config import Config
from vcam.output.sinks.virtualcam import SYSFS_VIDEO, find_v4l2_device, modprobe_command

V4L2_MODULE = Path("/sys/module/v4l2loopback")


@dataclass
class Check:
    name: str
    status: str  # "OK", "FAIL" or "WARN"
    detail: str
    fix: str = ""


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", "OK" if ok else "FAIL", platform.python_version(), "" if ok else "install Python 3.11 or newer")


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as e:
        return [Check("torch", "FAIL", str(e), "make install (installs torch 2.13.0)")]
    rows = [Check("torch", "OK", torch.__version__)]
    if torch.cuda.is_available():
        rows.append(Check("cuda", "OK", f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"))
    else:
        rows.append(Check("cuda", "WARN", "no CUDA device: flux2 runs only as the tiny CPU demo model",
                          "use a machine with an NVIDIA GPU and a CUDA build of torch for real edits"))
    return rows


def check_models(cfg: Config) -> list[Check]:
    rows = []
    try:
        from vcam.tools.models import inventory
    except ImportError as e:  # the models module is part of the package; this is a broken install
        return [Check("models", "FAIL", f"cannot list models: {e}", "reinstall: make install")]
    for row in inventory(cfg.engine.models_dir.expanduser()):
        rows.append(Check(f"model {row.name}", "OK" if row.ok else "WARN", row.detail, row.fix))
    from engine.interp import search_roots

    shared = search_roots(cfg.engine.models_dir)[-1]  # the shared-models folder, as the engine looks it up
    for name, rel in (("rife-v4.25", "rife-v4.25/flownet.pkl"), ("rife-v3-hd", "rife-v3-hd/flownet.pkl"),
                      ("taef2", "taef2/taef2_decoder.pth")):
        path = shared / rel
        # the project's shared test weights: tests and benchmarks use them, users need the rows above
        rows.append(Check(f"shared {name}", "OK" if path.is_file() else "WARN",
                          str(path) if path.is_file() else f"not found at {path}",
                          "" if path.is_file() else "only tests and benchmarks need it; point "
                                                    "FLUXRT_SHARED_MODELS at a folder holding it"))
    return rows


def check_v4l2(cfg: Config, sysfs: Path = SYSFS_VIDEO, module: Path = V4L2_MODULE) -> list[Check]:
    if platform.system() != "Linux":
        return [Check("virtual camera", "OK", f"{platform.system()}: pyvirtualcam uses the OBS / Unity Capture camera")]
    label = cfg.output.camera_label
    fix = modprobe_command(label)
    rows = []
    loaded = module.is_dir()
    rows.append(Check("v4l2loopback module", "OK" if loaded else "FAIL", "loaded" if loaded else "not loaded",
                      "" if loaded else f"sudo apt install v4l2loopback-dkms && {fix}"))
    device = find_v4l2_device(label, sysfs)
    rows.append(Check("virtual camera device", "OK" if device else "FAIL",
                      f"{device} named {label!r}" if device else f"no /dev/video* named {label!r}",
                      "" if device else fix))
    caps_file = module / "parameters" / "exclusive_caps"
    if loaded and caps_file.is_file():
        caps = caps_file.read_text().strip()
        ok = caps.startswith("Y") or caps.startswith("1")
        rows.append(Check("exclusive_caps", "OK" if ok else "FAIL", caps,
                          "" if ok else f"Chrome/Meet/Zoom need it: sudo modprobe -r v4l2loopback && {fix}"))
    return rows


def check_obs(cfg: Config, timeout: float = 1.0) -> Check:
    o = cfg.obs
    where = f"{o.host}:{o.port}"
    try:
        with socket.create_connection((o.host, o.port), timeout=timeout):
            pass
    except OSError as e:
        status = "FAIL" if o.enabled else "WARN"
        return Check("obs websocket", status, f"nothing listening at {where} ({e.strerror or e})",
                     "start OBS and enable Tools -> WebSocket Server Settings (port 4455)"
                     + ("" if o.enabled else "; only needed with [obs] enabled = true"))
    return Check("obs websocket", "OK", f"reachable at {where}")


def check_control(cfg: Config) -> Check:
    from urllib.parse import urlsplit

    from vcam.control.client import daemon_url

    c = cfg.control
    where = urlsplit(daemon_url(c))
    try:
        with socket.create_connection((where.hostname, where.port), timeout=0.5):
            return Check("control API", "OK", f"a daemon answers on {c.host}:{c.port}")
    except OSError:
        return Check("control API", "OK", f"port {c.port} free (no daemon running)")


def run_checks(cfg: Config) -> list[Check]:
    return [check_python(), *check_torch(), *check_models(cfg), *check_v4l2(cfg), check_obs(cfg), check_control(cfg)]
