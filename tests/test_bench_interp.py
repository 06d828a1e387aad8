"""Smoke test of `fluxrt-cam bench interp`: tiny parameters, JSON shape and sane values, the progress bar
and the --plot figure."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vcam.tools.bench.interp import format_table, run
from vcam.tools.cli import app
from tests.plot_checks import check_figure

SHARED = Path(os.environ.get("FLUXRT_SHARED_MODELS") or Path(__file__).resolve().parents[1].parent / "shared" / "models")
HAVE_WEIGHTS = (SHARED / "rife-v4.25" / "flownet.pkl").is_file() and (SHARED / "rife-v3-hd" / "flownet.pkl").is_file()


def _check(result: dict, size: int) -> None:
    assert isinstance(result["device"], str) and result["device"].startswith("cpu")
    assert result["resolution"] == f"{size}x{size}"
    assert [r["method"] for r in result["rows"]] == ["rife-v4.25", "rife-v3-hd", "flow", "blend"]
    for row in result["rows"]:
        if row["method"].startswith("rife") and not HAVE_WEIGHTS:
            assert row["ms_per_frame"] is None and "no RIFE weights" in row["note"]
            continue
        assert 0 < row["ms_per_frame"] < 60_000, row
        assert math.isfinite(row["psnr_db"]) and 5 < row["psnr_db"] <= 100, row
        assert 0 < row["psnr_periodic_db"] <= 100
    by = {r["method"]: r for r in result["rows"]}
    assert by["flow"]["psnr_db"] > by["blend"]["psnr_db"]


@pytest.mark.timeout(120)
def test_bench_interp_smoke(monkeypatch):
    monkeypatch.setattr("engine.interp.DEFAULT_MODELS_DIR", Path("/nonexistent-models-dir"))
    r = run(size=64, cases=2)
    _check(r, 64)
    assert len(r["cases"]) == 2 and len(r["periodic_cases"]) == 1
    table = format_table(r)
    assert "flow" in table and "blend" in table and "ms/frame" in table
    if HAVE_WEIGHTS:
        assert "rife-v4.25 vs flow" in table


@pytest.mark.timeout(120)
def test_bench_interp_cli_json(tmp_path):
    res = CliRunner().invoke(app, ["bench", "interp", "--size", "64", "--cases", "1", "--json",
                                   "--set", f"engine.models_dir={tmp_path}"])
    assert res.exit_code == 0, res.output
    _check(json.loads(res.stdout), 64)  # the progress bar went to stderr: stdout is the JSON alone
    assert "done" in res.stderr


@pytest.mark.timeout(120)
def test_bench_interp_plot(tmp_path, monkeypatch):
    from vcam.tools.bench.plots import interp_figure

    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "none"))  # no RIFE: its row has no point

    png = tmp_path / "interp.png"
    res = CliRunner().invoke(app, ["bench", "interp", "--size", "48", "--cases", "1", "--methods", "rife-v4.25,flow,blend",
                                   "--json", "--quiet", "--plot", str(png), "--set", f"engine.models_dir={tmp_path}"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""  # --quiet: no progress bar, no note
    result = json.loads(res.stdout)
    fig = interp_figure(result, tmp_path / "again.png")
    check_figure(png, fig)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["flow", "blend"]


def test_bench_interp_cli_rejects_bad_methods():
    res = CliRunner().invoke(app, ["bench", "interp", "--methods", "rife,sharpen"])
    assert res.exit_code == 2 and "unknown" in res.output


def test_bench_interp_without_weights_reports_instead_of_timing_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "none"))
    r = run(size=48, cases=1, methods=["rife-v4.25", "flow", "blend"], models_dir=tmp_path / "models")
    rife, flow, _ = r["rows"]
    assert rife["ms_per_frame"] is None and rife["psnr_db"] is None and "no RIFE weights" in rife["note"]
    assert flow["ms_per_frame"] > 0
    assert "no RIFE weights" in format_table(r)
