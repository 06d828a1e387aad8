"""`fluxrt-cam bench stream`: a small run end to end (keys and sane values, not fps thresholds: CI is a
busy 2-core machine), and the viewers' part counting on split reads."""
from __future__ import annotations

import asyncio

import pytest

from vcam.tools.bench.stream import MARK, PartCounter, format_table, run_bench


@pytest.mark.timeout(120)
def test_bench_stream_smoke():
    r = run_bench(viewers=4, seconds=1.0, width=128, height=96)
    assert set(r) == {"device", "viewers", "seconds", "resolution", "camera_fps", "jpeg_quality", "pictures",
                      "pictures_per_s", "viewer_fps", "viewers_below_25_fps", "parts_sent", "parts_received",
                      "part_kb", "encodes", "variants_watched", "watchers_during", "watchers_after",
                      "watchers_zero_after_s", "slow_viewer", "cpu_pct", "window_s", "server_final"}
    assert r["viewers"] == 4 and r["resolution"] == "128x96" and r["pictures"] > 0
    fps = r["viewer_fps"]
    assert 0 < fps["min"] <= fps["p5"] <= fps["median"] <= fps["max"]  # every viewer received parts
    assert r["parts_received"] > 0 and r["parts_sent"] > 0 and r["part_kb"] > 0
    # one encode per picture and variant watched, not one per viewer
    assert 0 < r["encodes"] <= r["pictures"] * r["variants_watched"] + 1  # (+1: a picture just before the window)
    assert r["watchers_during"] == 5 and r["watchers_after"] == 0  # 4 + the slow one, then none
    assert set(r["slow_viewer"]) == {"fps", "read_kb_per_s", "pictures_missed_pct"}
    assert r["server_final"]["watchers"] == 0 and r["server_final"]["encodes"] >= r["encodes"]
    assert "viewer fps" in format_table(r)


def test_part_counter_counts_marks_split_across_reads():
    async def count(chunks: list[bytes]) -> int:
        viewer = PartCounter()
        for c in chunks:
            viewer.data_received(c)
        return viewer.parts

    stream = (MARK + b"Content-Type: image/jpeg\r\n\r\n" + bytes(range(256)) + b"\r\n") * 3
    whole = asyncio.run(count([stream]))
    # every split point, the marks' own included
    split = {asyncio.run(count([stream[:i], stream[i:]])) for i in range(1, len(stream))}
    assert whole == 3 and split == {3}
