"""Smoke test of `fluxrt-cam bench engine`: tiny parameters, JSON shape and sane values."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vcam.tools.bench.engine import frames, run_engine, table
from vcam.tools.cli import app

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("torch_one_thread")]


@pytest.fixture
def tiny_cache(tmp_path, monkeypatch, tiny_flux2_dir):
    """Point the tiny-model cache at a temp dir that already holds the session's test model."""
    from engine.flux2.tiny import TEST

    (tmp_path / TEST.key()).symlink_to(tiny_flux2_dir, target_is_directory=True)
    monkeypatch.setenv("FLUXRT_TINY_CACHE", str(tmp_path))
    return tmp_path


def _check_shape(data: dict, resolution: str, steps: int) -> None:
    assert set(data) == {"device", "model", "resolution", "steps", "stages_ms", "engine_fps"}
    assert data["resolution"] == resolution and data["steps"] == steps
    assert set(data["stages_ms"]) == {"prepare", "denoise", "decode"}
    assert all(isinstance(v, float) and 0 < v < 60_000 for v in data["stages_ms"].values())
    assert 0 < data["engine_fps"] < 10_000
    assert data["device"].startswith(("cpu", "cuda"))


def test_bench_engine_cli_json(tiny_cache):
    r = runner_invoke(["bench", "engine", "--json", "--frames", "2", "--warmup", "1", "--set", "engine.name=flux2-tiny",
                       "--set", "engine.model=test", "--set", "engine.width=64", "--set", "engine.height=80",
                       "--set", "engine.steps=1"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # the progress bar went to stderr: stdout is the JSON alone
    _check_shape(data, "64x80", 1)
    assert data["model"] == "flux2-tiny (test)"
    assert "done" in r.stderr and "4/4" in r.stderr  # steps: the build, 1 warm-up and 2 timed frames


def test_bench_engine_cli_table(tiny_cache):
    r = runner_invoke(["bench", "engine", "--frames", "1", "--warmup", "0", "--tiny-preset", "test",
                       "--set", "engine.width=64", "--set", "engine.height=64", "--set", "engine.steps=2"])
    assert r.exit_code == 0, r.output
    assert "denoise" in r.stdout and "engine fps" in r.stdout and "64x64, 2 steps" in r.stdout
    assert "spatial cache: on, median active fraction" in r.stdout  # the default config has the cache on


def test_bench_engine_cli_table_cache_off(tiny_cache):
    r = runner_invoke(["bench", "engine", "--frames", "1", "--warmup", "0", "--tiny-preset", "test", "--quiet",
                       "--set", "engine.width=64", "--set", "engine.height=64", "--set", "engine.steps=1",
                       "--set", "cache.enabled=false"])
    assert r.exit_code == 0, r.output
    assert "done" not in r.stderr  # --quiet: no progress bar
    assert "spatial cache: off" in r.stdout and "median active fraction" not in r.stdout


def test_device_label_names_the_processor_and_its_threads():
    import platform

    import torch

    from vcam.tools.bench import device_label

    label = device_label("cpu")
    assert label.endswith(f", {torch.get_num_threads()} torch threads)"), label
    if platform.system() == "Linux":  # the processor's own name, as the kernel reports it
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        assert names and label.startswith(f"cpu ({names[0]}, "), label
    assert device_label("meta") == "meta"  # no processor to name: just the device


def test_bench_engine_bad_config_exits_2():
    r = runner_invoke(["bench", "engine", "--set", "engine.width=100"])
    assert r.exit_code == 2 and "multiple of 16" in r.output


def test_run_engine_with_passthrough():
    from engine import create_engine

    notes: list[str] = []
    data = run_engine(create_engine("passthrough"), width=32, height=32, steps=2, prompt="x", frames_n=2, warmup=0,
                      notes=notes)
    assert data["resolution"] == "32x32" and data["model"] == "passthrough"
    assert "passthrough" in table(data, notes) and notes == ["spatial cache: off"]


def test_frames_drift_like_a_webcam():
    fs = frames(64, 48, 3)
    assert all(f.shape == (48, 64, 3) and f.dtype.name == "uint8" for f in fs)
    assert (fs[0] != fs[1]).any() and fs[0].std() > 10


def runner_invoke(args):
    return CliRunner().invoke(app, args)
