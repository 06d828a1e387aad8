import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyvirtualcam

from tests.camera_backend import RecordingBackend, read_log
from vcam.config import load_config
from vcam.tools.doctor import check_obs, check_v4l2, run_checks
from vcam.output.sinks.virtualcam import VirtualCameraSink, choose_device, find_v4l2_device, modprobe_command

REPO = Path(__file__).resolve().parents[1]


def fake_sysfs(root: Path, names: dict[str, str]) -> Path:
    for dev, name in names.items():
        (root / dev).mkdir(parents=True)
        (root / dev / "name").write_text(name + "\n")
    return root


def test_device_is_found_by_label_not_by_number(tmp_path):
    sysfs = fake_sysfs(tmp_path / "v4l", {"video0": "Integrated Webcam", "video3": "OBS Virtual Camera",
                                           "video10": "FluxRT Camera"})
    assert find_v4l2_device("FluxRT Camera", sysfs) == "/dev/video10"
    assert find_v4l2_device("Nope", sysfs) is None
    assert find_v4l2_device("FluxRT Camera", tmp_path / "absent") is None


def test_missing_device_message_gives_the_exact_fix(tmp_path):
    backend, device, error = choose_device("FluxRT Camera", None, sysfs=tmp_path / "no-video")
    assert backend is None and device is None
    assert 'card_label="FluxRT Camera"' in error and "exclusive_caps=1" in error and "setup-vcam" in error
    assert modprobe_command("My Cam") == ('sudo modprobe v4l2loopback devices=1 video_nr=10 '
                                          'card_label="My Cam" exclusive_caps=1')


def test_real_pyvirtualcam_camera_through_a_registered_backend(tmp_path, monkeypatch):
    log = tmp_path / "cam.log"
    monkeypatch.setenv("FLUXRT_TEST_CAMERA_LOG", str(log))
    sink = VirtualCameraSink("FluxRT Camera", 64, 48, 30, backend="tests.camera_backend:RecordingBackend")
    frame = np.full((48, 64, 3), 9, np.uint8)
    for _ in range(3):
        sink.send(frame)
    sink.close()
    assert pyvirtualcam.camera.BACKENDS["tests.camera_backend:RecordingBackend"] is RecordingBackend
    rows = read_log(log)
    assert len(rows) == 3 and rows[0][2] == 9.0 and rows[0][3] == 64 * 48 * 3
    assert sink.status["frames"] == 3 and sink.status["error"] is None


def test_sink_without_device_reports_and_retries_without_raising():
    sink = VirtualCameraSink("FluxRT Camera", 64, 48, 30)
    sink.send(np.zeros((48, 64, 3), np.uint8))
    assert not sink.status["active"] and "modprobe" in sink.status["error"]


def test_doctor_v4l2_rows_with_and_without_the_module(tmp_path):
    cfg = load_config()
    rows = check_v4l2(cfg, sysfs=tmp_path / "none", module=tmp_path / "nomodule")
    assert [r.status for r in rows] == ["FAIL", "FAIL"]
    assert all("modprobe v4l2loopback" in r.fix for r in rows)
    module = tmp_path / "module"
    (module / "parameters").mkdir(parents=True)
    (module / "parameters" / "exclusive_caps").write_text("N\n")
    sysfs = fake_sysfs(tmp_path / "v4l", {"video10": "FluxRT Camera"})
    rows = {r.name: r for r in check_v4l2(cfg, sysfs=sysfs, module=module)}
    assert rows["v4l2loopback module"].status == "OK"
    assert rows["virtual camera device"].status == "OK" and "/dev/video10" in rows["virtual camera device"].detail
    assert rows["exclusive_caps"].status == "FAIL" and "Chrome" in rows["exclusive_caps"].fix


def test_doctor_obs_row_fails_only_when_obs_is_enabled():
    closed = {"obs.port": 1}  # nothing listens on port 1
    assert check_obs(load_config(overrides=closed)).status == "WARN"
    row = check_obs(load_config(overrides={**closed, "obs.enabled": True}))
    assert row.status == "FAIL" and "WebSocket Server Settings" in row.fix


def test_doctor_cli_prints_one_row_per_check():
    r = subprocess.run([sys.executable, "-m", "vcam.tools.cli", "doctor", "--json"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    rows = json.loads(r.stdout)
    # exit status 1 exactly when a row fails (no v4l2loopback here, for one), else 0
    assert r.returncode == (1 if any(row["status"] == "FAIL" for row in rows) else 0), r.stderr
    names = {row["name"] for row in rows}
    assert {"python", "torch", "cuda", "v4l2loopback module", "virtual camera device", "obs websocket",
            "control API"} <= names
    assert all(row["status"] in ("OK", "FAIL", "WARN") for row in rows)
    assert all(row["fix"] for row in rows if row["status"] == "FAIL")
    assert len(rows) == len(run_checks(load_config()))


def test_unloadable_camera_backend_is_reported_not_raised():
    sink = VirtualCameraSink("FluxRT Camera", 64, 48, 30, backend="no_such_module:Cam")
    sink.send(np.zeros((48, 64, 3), np.uint8))
    assert not sink.status["active"] and "output.camera_backend = 'no_such_module:Cam'" in sink.status["error"]
