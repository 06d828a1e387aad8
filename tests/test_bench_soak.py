"""`fluxrt-cam bench soak`: the 2-minute CI soak (flux2-tiny, kills of both children) checked for its keys
and sane values, and the pieces that need no daemon. No RSS or timing thresholds: CI is a busy 2-core
machine; the real figures are for the report of a long soak."""
from __future__ import annotations

import numpy as np
import pytest

from tests.daemon_helpers import shm_names
from vcam.tools.bench.soak import (SEND_TIMES_ENV, OutputCounts, SendTimesBackend, format_table, interval_stats, rss_peaks,
                                   kill_times, read_send_times, run_soak)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_minute_soak_with_a_kill_of_each_child():
    r = run_soak(minutes=2, engine="flux2-tiny", viewers=3)
    assert set(r) >= {"device", "engine", "minutes", "startup_s", "warmup_s", "window_s", "resources",
                      "output_interval_ms", "restarts", "kills", "frames_sent", "frames_lost", "prompt_changes",
                      "viewers", "timeline", "daemon_rss_peaks_mb"}
    assert r["engine"] == "flux2-tiny" and r["minutes"] == 2 and r["warmup_s"] == 30
    # one kill a minute, inference first, and each killed child came back
    assert [k["role"] for k in r["kills"]] == ["inference", "output"]
    assert r["restarts"]["inference"] >= 1 and r["restarts"]["output"] >= 1
    assert r["frames_sent"] > 0 and r["frames_lost"]["output"] >= 0 and r["frames_lost"]["stream"] >= 0
    p = r["prompt_changes"]
    assert p["requested"] > 0 and p["applied"] > 0
    res = r["resources"]
    for who in ("supervisor", "daemon"):
        for key in ("rss_mb", "open_files", "threads"):
            assert set(res[who][key]) == {"warm", "end", "growth"}
        assert res[who]["rss_mb"]["end"] > 0
    assert res["daemon"]["open_files"]["growth"] < 50  # sanity only: a leak per frame would be thousands
    assert res["daemon"]["processes"]["end"] >= 4  # supervisor, inference, output, standby
    iv = r["output_interval_ms"]
    assert 0 < iv["p50"] <= iv["p99"] <= iv["max"]
    assert r["viewers"]["count"] == 3 and r["viewers"]["fps"]["min"] > 0
    assert "camera interval" in format_table(r)
    assert not shm_names()


def test_kill_times_one_a_minute_in_the_middle_of_each():
    assert kill_times(120) == [30, 90]
    assert kill_times(30) == [15]  # a run under a minute still has one
    assert kill_times(150) == [25, 75, 125]


def test_interval_stats_of_send_times():
    ts = np.arange(0, 10, 0.1)
    ts = np.append(ts, 10.5)  # one gap of 0.6 s
    s = interval_stats(ts, fps=10)
    assert s["p50"] == pytest.approx(100, abs=0.1) and s["max"] == pytest.approx(600, abs=0.1)
    assert s["over_2x_nominal"] == 1 and s["nominal"] == 100
    assert interval_stats(np.array([1.0]), fps=10)["p50"] is None


def test_send_times_backend_appends_from_two_writers(tmp_path, monkeypatch):
    path = tmp_path / "sends"
    monkeypatch.setenv(SEND_TIMES_ENV, str(path))
    a, b = (SendTimesBackend(width=4, height=4, fps=30, fourcc=0, device=None) for _ in range(2))
    frame = np.zeros(48, np.uint8)
    for cam in (a, b, a):
        cam.send(frame)
    a.close()
    b.close()
    ts = read_send_times(path, 0, float("inf"))
    assert ts.size == 3 and np.all(np.diff(ts) >= 0)


def test_output_counts_add_up_over_output_processes():
    c = OutputCounts()
    c.see({"pid": 1, "lost": 2, "sent": 100})
    c.start()  # the run starts here: pid 1 counts from its values now
    c.see({"pid": 1, "lost": 3, "sent": 150})
    c.see({"pid": 2, "standby": True})  # a promoted standby before its first report
    c.see({"pid": 2, "lost": 1, "sent": 40})
    assert c.total("lost") == 2 and c.total("sent") == 90


def test_rss_peaks_compare_the_same_state_early_and_late():
    # (t, supervisor MB, tree MB): the tree dips after each kill and climbs back
    timeline = [[0, 100, 800], [30, 110, 300], [60, 110, 700], [90, 110, 850], [120, 110, 400],
                [150, 110, 820], [180, 110, 860], [210, 110, 500], [240, 110, 855], [270, 110, 870]]
    peaks = rss_peaks(timeline, warmup_s=60)
    assert peaks == {"early": 850, "late": 870, "growth": 20}
    assert rss_peaks(timeline[:3], warmup_s=60) is None  # too short to say
