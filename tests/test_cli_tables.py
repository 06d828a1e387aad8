"""`fluxrt-cam status` and `doctor` print aligned tables (rich); the JSON forms are tested with the daemon."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from vcam.tools import cli, doctor
from vcam.tools.doctor import Check

STATUS = {"daemon": {
    "settings": {"prompt": "a [bold] watercolor", "prompt_version": 3, "preset": None, "mode": "edit"},
    "inference": {"engine": "flux2-tiny", "engine_fps": 2.5, "stages_ms": {"denoise": 300.0}, "interpolator": "flow",
                  "factor": 4, "interp_errors": 3, "last_error": "exited with code 1", "restarts": 2},
    "output": {"showing": "engine", "sent": 120, "latency_p50_ms": 41.0,
               "sinks": {"virtual_camera": {"active": False, "device": None, "backend": None, "frames": 0,
                                            "error": "no v4l2loopback device named 'FluxRT Camera': sudo modprobe x"}}},
    "stream_url": "http://127.0.0.1:8766/stream.mjpg",
    "obs": {"enabled": True, "connected": False, "state": "connecting", "scene": None,
            "last_error": "connection refused"},
}}


def lines(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines()]


def test_status_is_one_aligned_row_per_topic_and_the_prompt_is_not_markup(monkeypatch):
    monkeypatch.setattr(cli, "_control_call", lambda cfg, url, call: STATUS)
    r = CliRunner().invoke(cli.app, ["status"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    out = lines(r.output)
    labels = [line.split()[0] for line in out]
    assert labels == ["prompt", "engine", "interp", "output", "camera", "stream", "obs", "inference"]
    assert len({line.index(line.split()[1]) for line in out}) == 1  # the values start in one column
    assert "'a [bold] watercolor' (version 3, preset -, mode edit)" in out[0]
    assert "2.5 fps" in out[1] and "denoise 300.0 ms" in out[1] and "flow x4, 3 groups failed (blended)" in out[2]
    assert "no device not active, error: no v4l2loopback device named 'FluxRT Camera': sudo modprobe x" in out[4]
    assert "not connected (connecting), scene -, last error: connection refused" in out[6]
    assert "restarted 2x, last error: exited with code 1" in out[7]


def _status_rows(monkeypatch, daemon: dict) -> dict[str, str]:
    monkeypatch.setattr(cli, "_control_call", lambda cfg, url, call: {"daemon": {**STATUS["daemon"], **daemon}})
    r = CliRunner().invoke(cli.app, ["status"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return {line.split()[0]: line.split(None, 1)[1] for line in lines(r.output)}


def test_status_camera_and_obs_rows_when_working_and_when_off(monkeypatch):
    working = _status_rows(monkeypatch, {
        "output": {"sinks": {"virtual_camera": {"active": True, "device": "/dev/video10", "backend": "v4l2loopback",
                                                "frames": 900, "error": None}}},
        "obs": {"enabled": True, "connected": True, "url": "ws://127.0.0.1:4455", "scene": "Gaming",
                "last_error": None},
        "inference": {"engine": "flux2", "phase": "loading weights"},
    })
    assert working["camera"] == "/dev/video10 active (v4l2loopback, 900 frames)"
    assert working["obs"] == "connected to ws://127.0.0.1:4455, scene 'Gaming'"
    assert working["engine"].endswith("(loading weights)")  # still starting: the phase says where it is
    off = _status_rows(monkeypatch, {"output": {"sinks": {}}, "obs": {"enabled": False}})
    assert off["camera"] == 'off (output.virtual_camera = "off")' and off["obs"] == "off (obs.enabled = false)"
    early = _status_rows(monkeypatch, {"output": {}})
    assert early["camera"] == "- (the output process has not reported yet)"


def test_doctor_rows_with_the_fix_under_the_detail_and_the_problem_count(monkeypatch):
    rows = [Check("python", "OK", "3.11.7"), Check("v4l2loopback", "FAIL", "module not loaded", "sudo modprobe x"),
            Check("cuda", "WARN", "no CUDA device")]
    monkeypatch.setattr(doctor, "run_checks", lambda cfg: rows)
    r = CliRunner().invoke(cli.app, ["doctor"], env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output  # a failing row fails the command
    out = lines(r.output)
    assert out[0].split() == ["OK", "python", "3.11.7"]
    assert out[1].split()[:2] == ["FAIL", "v4l2loopback"] and out[1].endswith("module not loaded")
    assert out[2].strip() == "fix: sudo modprobe x" and out[2].index("fix") == out[1].index("module")
    assert out[3].split()[:2] == ["WARN", "cuda"] and out[-1] == "1 problem(s) found."


def test_doctor_exit_status_fails_only_on_fail_rows(monkeypatch):
    warn_only = [Check("python", "OK", "3.11.7"), Check("cuda", "WARN", "no CUDA device", "use a GPU")]
    monkeypatch.setattr(doctor, "run_checks", lambda cfg: warn_only)
    for args in (["doctor"], ["doctor", "--json"]):
        r = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
    assert lines(r.output)[-1] == "]" and '"status": "WARN"' in r.output
    failing = warn_only + [Check("virtual camera device", "FAIL", "no /dev/video* named 'FluxRT Camera'", "sudo x")]
    monkeypatch.setattr(doctor, "run_checks", lambda cfg: failing)
    r = CliRunner().invoke(cli.app, ["doctor", "--json"])
    assert r.exit_code == 1 and [row["status"] for row in json.loads(r.stdout)] == ["OK", "WARN", "FAIL"]
