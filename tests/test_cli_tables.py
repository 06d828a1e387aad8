"""`fluxrt-cam status` and `doctor` print aligned tables (rich); the JSON forms are tested with the daemon."""
from __future__ import annotations

from typer.testing import CliRunner

from vcam.tools import cli, doctor
from vcam.tools.doctor import Check

STATUS = {"daemon": {
    "settings": {"prompt": "a [bold] watercolor", "prompt_version": 3, "preset": None, "mode": "edit"},
    "inference": {"engine": "flux2-tiny", "engine_fps": 2.5, "stages_ms": {"denoise": 300.0}, "interpolator": "flow",
                  "factor": 4, "interp_errors": 3, "last_error": "exited with code 1", "restarts": 2},
    "output": {"showing": "engine", "sent": 120, "latency_p50_ms": 41.0},
    "stream_url": "http://127.0.0.1:8766/stream.mjpg",
    "obs": {"enabled": True, "connected": False, "last_error": "connection refused"},
}}


def lines(output: str) -> list[str]:
    return [line.rstrip() for line in output.splitlines()]


def test_status_is_one_aligned_row_per_topic_and_the_prompt_is_not_markup(monkeypatch):
    monkeypatch.setattr(cli, "_control_call", lambda cfg, url, call: STATUS)
    r = CliRunner().invoke(cli.app, ["status"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    out = lines(r.output)
    labels = [line.split()[0] for line in out]
    assert labels == ["prompt", "engine", "interp", "output", "stream", "obs", "inference"]
    assert len({line.index(line.split()[1]) for line in out}) == 1  # the values start in one column
    assert "'a [bold] watercolor' (version 3, preset -, mode edit)" in out[0]
    assert "2.5 fps" in out[1] and "denoise 300.0 ms" in out[1] and "flow x4, 3 groups failed (blended)" in out[2]
    assert "not connected, last error: connection refused" in out[5]
    assert "restarted 2x, last error: exited with code 1" in out[6]


def test_doctor_rows_with_the_fix_under_the_detail_and_the_problem_count(monkeypatch):
    rows = [Check("python", "OK", "3.11.7"), Check("v4l2loopback", "FAIL", "module not loaded", "sudo modprobe x"),
            Check("cuda", "WARN", "no CUDA device")]
    monkeypatch.setattr(doctor, "run_checks", lambda cfg: rows)
    r = CliRunner().invoke(cli.app, ["doctor"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    out = lines(r.output)
    assert out[0].split() == ["OK", "python", "3.11.7"]
    assert out[1].split()[:2] == ["FAIL", "v4l2loopback"] and out[1].endswith("module not loaded")
    assert out[2].strip() == "fix: sudo modprobe x" and out[2].index("fix") == out[1].index("module")
    assert out[3].split()[:2] == ["WARN", "cuda"] and out[-1] == "1 problem(s) found."
