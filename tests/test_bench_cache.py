"""Smoke test of `fluxrt-cam bench cache` with tiny parameters: JSON shape and sane values."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vcam.tools.cli import app

KEYS = {"active", "dense_ms", "cached_ms", "speedup", "flop_ratio", "psnr_db"}


@pytest.mark.timeout(120)
def test_bench_cache_json_shape_and_values():
    args = ["bench", "cache", "--json", "--width", "64", "--height", "48", "--text-tokens", "8", "--heads", "1",
            "--repeats", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert isinstance(out["device"], str) and out["device"]
    assert out["shape"]["noise_tokens"] == out["shape"]["reference_tokens"] == 12 and out["shape"]["head_dim"] == 128
    rows = out["rows"]
    assert [r["active"] for r in rows] == [0.0, 0.1, 0.25, 0.5, 0.9, 1.0]
    for r in rows:
        assert set(r) == KEYS
        assert r["dense_ms"] > 0 and r["speedup"] > 0 and 0 < r["psnr_db"] <= 100
        if r["active"] > 0:  # a still scene only copies the cached output (may round to 0.00 ms)
            assert r["cached_ms"] > 0
    ratios = [r["flop_ratio"] for r in rows]
    assert ratios[0] == 0.0 and ratios == sorted(ratios) and 0.5 < ratios[-1] < 1.0  # text served from cache
    assert rows[0]["psnr_db"] == 100.0  # a still scene: the cached output is the dense one


def test_bench_cache_rejects_a_bad_shape():
    res = CliRunner().invoke(app, ["bench", "cache", "--width", "50"])
    assert res.exit_code == 2 and "width = 50" in res.output and "multiple of 16" in res.output
