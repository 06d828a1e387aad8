"""Heartbeats (vcam/supervisor/heartbeat.py): rows in shared memory, a helper thread that beats through slow
work, engines that beat between steps, and a slow start that the watchdog does not mistake for a hang."""
from __future__ import annotations

import time

import numpy as np
import pytest

from tests.daemon_helpers import daemon_config, wait_until
from vcam.daemon import Daemon
from vcam.supervisor.heartbeat import RUNNING, STANDBY, STARTING, Heartbeats, Pulse


@pytest.fixture
def beats():
    hb = Heartbeats.create(2)
    yield hb
    hb.close()


def test_a_beat_moves_the_count_time_and_phase_of_its_own_row(beats):
    attached = Heartbeats.attach(beats.spec)
    try:
        beats.reset(0)
        beats.reset(1)
        before = beats.read(0)
        assert before.count == 0 and before.phase == STARTING
        attached.beat(0, STANDBY)
        after = beats.read(0)
        assert after.count == 1 and after.phase == STANDBY and after.ts >= before.ts
        assert beats.read(1).count == 0  # the other row is untouched
    finally:
        attached.close()


def test_slow_work_beats_from_a_helper_thread_then_the_loop_owns_the_row(beats):
    beats.reset(0)
    pulse = Pulse(beats, 0)
    with pulse.starting():
        time.sleep(1.0)  # a model load: the main thread does not beat
        during = beats.read(0)
        pulse.beat()  # the loop's beat is ignored while the helper owns the row
        assert beats.read(0).phase == STARTING
    assert during.count >= 2 and during.phase == STARTING and time.monotonic() - during.ts < 1.0
    assert beats.read(0).phase == RUNNING
    count = beats.read(0).count
    pulse.beat()
    assert beats.read(0).count == count + 1


def test_flux2_reports_progress_between_its_stages_and_steps(tiny_flux2_dir, torch_one_thread):
    from engine.flux2.engine import create_flux2_engine

    eng = create_flux2_engine(tiny=True, tiny_dir=tiny_flux2_dir, width=64, height=64, steps=3, device="cpu")
    calls = []
    eng.on_progress = lambda: calls.append(time.monotonic())
    eng.edit(np.zeros((64, 64, 3), np.uint8), prompt="a cat")
    assert len(calls) == 1 + 3  # after the encodes, then after each step


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_start_slower_than_the_watchdog_timeout_is_not_killed(tmp_path):
    # building flux2-tiny (imports, a random model, the first edit) takes far longer than 1.5 s of silence
    d = Daemon(daemon_config(tmp_path / "camera.log", **{"engine.name": "flux2-tiny", "watchdog.timeout_s": 1.5}))
    d.start()
    try:
        wait_until(lambda: d.status()["inference"].get("frames", 0) >= 3, timeout=240)
        inf = d.status()["inference"]
        assert inf["restarts"] == 0 and inf["last_error"] is None, inf
        assert inf["engine"] == "flux2-tiny"
    finally:
        d.stop()


def test_busy_beats_while_the_process_computes_and_not_while_it_is_blocked(beats):
    beats.reset(0)
    pulse = Pulse(beats, 0)
    with pulse.busy():
        end = time.process_time() + 1.0
        while time.process_time() < end:  # a slow edit: CPU in use
            pass
        computing = beats.read(0).count
        blocked_from = beats.read(0)
        time.sleep(1.0)  # a wait that never returns, for a while: no CPU used
        blocked = beats.read(0)
    assert computing >= 2
    assert blocked.count - blocked_from.count <= 1  # at most the beat for the CPU just before the sleep
    assert beats.read(0).phase == RUNNING
