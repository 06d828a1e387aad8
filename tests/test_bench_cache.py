"""Smoke test of `fluxrt-cam bench cache` with tiny parameters: JSON shape and sane values, the quick and
full presets, the progress bar and the --plot figure."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vcam.tools.bench.cache import FRACTIONS, MODES, BenchShape, mode_settings
from vcam.tools.cli import app
from tests.plot_checks import check_figure

KEYS = {"active", "dense_ms", "cached_ms", "speedup", "flop_ratio", "psnr_db"}
TINY = ["--width", "64", "--height", "48", "--text-tokens", "8", "--heads", "1", "--repeats", "1"]


@pytest.mark.timeout(120)
def test_bench_cache_json_shape_and_values():
    res = CliRunner().invoke(app, ["bench", "cache", "--json", *TINY])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the progress bar went to stderr: stdout is the JSON alone
    assert "done" in res.stderr
    assert isinstance(out["device"], str) and out["device"]
    assert out["mode"] == "quick"
    assert out["shape"]["noise_tokens"] == out["shape"]["reference_tokens"] == 12 and out["shape"]["head_dim"] == 128
    assert out["shape"]["heads"] == 1 and out["shape"]["repeats"] == 1  # the options override the preset
    rows = out["rows"]
    assert tuple(r["active"] for r in rows) == MODES["quick"].fractions
    for r in rows:
        assert set(r) == KEYS
        assert r["dense_ms"] > 0 and r["speedup"] > 0 and 0 < r["psnr_db"] <= 100
        if r["active"] > 0:  # a still scene only copies the cached output (may round to 0.00 ms)
            assert r["cached_ms"] > 0
    ratios = [r["flop_ratio"] for r in rows]
    assert ratios[0] == 0.0 and ratios == sorted(ratios) and 0.5 < ratios[-1] < 1.0  # text served from cache
    assert rows[0]["psnr_db"] == 100.0  # a still scene: the cached output is the dense one


@pytest.mark.timeout(120)
def test_bench_cache_full_is_accepted_and_runs_the_full_fractions():
    # --full with a tiny shape: the full preset's fractions, not its minutes
    res = CliRunner().invoke(app, ["bench", "cache", "--full", "--json", "--quiet", *TINY])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""  # --quiet: no progress bar
    out = json.loads(res.stdout)
    assert out["mode"] == "full" and [r["active"] for r in out["rows"]] == list(FRACTIONS)
    assert set(out["rows"][0]) == KEYS


def test_full_keeps_the_original_work_and_the_default_does_less():
    name, full = mode_settings(True)
    assert name == "full" and full.shape == BenchShape() and full.fractions == FRACTIONS and full.repeats == 3
    name, quick = mode_settings(False)
    assert name == "quick" and quick.shape.heads < full.shape.heads and quick.repeats < full.repeats
    assert set(quick.fractions) < set(full.fractions)
    # the token layout (what the FLOP ratios depend on) is klein's in both
    assert (quick.shape.width, quick.shape.height, quick.shape.text_tokens) == (512, 512, 512)
    assert mode_settings(False, repeats=5, heads=2)[1].shape.heads == 2
    assert mode_settings(False, repeats=5, heads=2)[1].repeats == 5


@pytest.mark.timeout(120)
def test_bench_cache_plot(tmp_path):
    from vcam.tools.bench.plots import cache_figure

    png = tmp_path / "cache.png"
    res = CliRunner().invoke(app, ["bench", "cache", "--json", "--quiet", "--plot", str(png), *TINY])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    fig = cache_figure(result, tmp_path / "again.png")
    check_figure(png, fig)
    assert len(fig.axes) == 2  # speedup; FLOP and time ratios
    assert [len(ax.get_legend().get_texts()) for ax in fig.axes] == [2, 2]


def test_bench_cache_rejects_a_bad_plot_path_before_running(tmp_path):
    res = CliRunner().invoke(app, ["bench", "cache", "--plot", str(tmp_path / "missing" / "c.png")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["bench", "cache", "--plot", str(tmp_path / "c.jpg")])
    assert res.exit_code == 2 and "PNG" in res.output


def test_bench_cache_rejects_a_bad_shape():
    res = CliRunner().invoke(app, ["bench", "cache", "--width", "50"])
    assert res.exit_code == 2 and "width = 50" in res.output and "multiple of 16" in res.output
