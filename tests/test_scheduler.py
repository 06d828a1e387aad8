import numpy as np

from vcam.output.scheduler import PresentationScheduler
from vcam.shm import FrameMeta

FRAME = np.zeros((2, 2, 3), np.uint8)


def group(n: int, k: int, interval: float) -> list:
    return [(FRAME, FrameMeta(n, 0.0, 1, group=n, index=i, count=k, engine_interval=interval)) for i in range(k)]


def play(s: PresentationScheduler, until: float, step: float = 0.0005) -> list:
    shown, t = [], getattr(s, "_t", 0.0)
    while t < until:
        got = s.pop_due(t)
        if got is not None:
            shown.append((t, got.meta))
        t += step
    s._t = t
    return shown


def test_group_is_spread_evenly_over_the_engine_interval():
    s = PresentationScheduler(fps=32)
    k, interval = 4, 0.125
    shown = []
    for n in range(10):
        s._t = n * interval
        s.push_group(group(n, k, interval), now=n * interval)
        shown += play(s, (n + 1) * interval)
    times = np.array([t for t, _ in shown])
    gaps = np.diff(times)
    assert np.allclose(gaps, interval / k, atol=0.001)
    assert [m.group for _, m in shown] == sorted(m.group for _, m in shown)  # in order, never interleaved
    assert sum(m.is_engine_frame for _, m in shown) == 10  # every engine frame shown once


def test_arrival_jitter_below_half_a_slot_is_absorbed():
    s = PresentationScheduler(fps=32)
    rng = np.random.default_rng(0)
    k, interval, shown = 4, 0.125, []
    for n in range(20):
        arrival = n * interval + rng.uniform(-0.01, 0.01)
        play(s, arrival)  # run the clock up to the arrival
        s.push_group(group(n, k, interval), now=s._t)
        shown += play(s, (n + 1) * interval - 0.012)
    gaps = np.diff([t for t, _ in shown])
    assert gaps.std() < 0.004  # the arrivals alone have a std of ~6 ms
    assert sum(m.is_engine_frame for _, m in shown) == 20


def test_new_group_mid_playback_shortens_the_run_without_losing_its_engine_frame():
    s = PresentationScheduler(fps=32)
    s.push_group(group(0, 4, 0.125), now=0.0)
    first = play(s, 0.035)  # frames 0 and 1 of group 0 shown
    assert len(first) == 2
    s.push_group(group(1, 4, 0.125), now=s._t)  # arrives early
    rest = play(s, 0.5)
    metas = [m for _, m in rest]
    assert (metas[0].group, metas[0].index) == (0, 3)  # group 0's engine frame comes next
    assert [m.group for m in metas[1:]] == [1, 1, 1, 1]
    assert s.dropped_interpolated == 1
    times = [t for t, _ in first + rest]
    assert times == sorted(times)  # monotonic presentation


def test_single_frame_groups_are_shown_on_arrival():
    s = PresentationScheduler(fps=30)
    s.push_group(group(0, 1, 0.033), now=1.0)
    assert s.pop_due(1.0) is not None


def test_keepalive_repeats_only_after_grace_following_a_new_frame():
    s = PresentationScheduler(fps=30)
    assert abs(s.wake_time(1.0, last_was_new=True) - (1.0 + 1.5 / 30)) < 1e-9
    assert abs(s.wake_time(1.0, last_was_new=False) - (1.0 + 1 / 30)) < 1e-9
    s.push_group(group(0, 1, 0.033), now=1.01)
    assert s.wake_time(1.0, last_was_new=True) == 1.01


def test_engine_rate_estimate_follows_a_real_slowdown_but_not_one_stall():
    s = PresentationScheduler(fps=30)
    t = 0.0
    for n in range(10):  # 10 engine frames/s
        s.push_group(group(n, 3, 0.0), now=t)
        t += 0.1
    t += 1.0  # one stall (a restart): ignored
    s.push_group(group(10, 3, 0.0), now=t)
    assert abs(s.interval - 0.1) < 1e-9
    for n in range(11, 20):  # the engine now runs at 2.5 frames/s
        t += 0.4
        s.push_group(group(n, 3, 0.0), now=t)
    assert abs(s.interval - 0.4) < 1e-9


def test_frames_as_read_become_whole_groups_and_a_half_lost_group_is_never_played():
    s = PresentationScheduler(fps=32)
    g1, g2, g3 = group(1, 4, 0.125), group(2, 4, 0.125), group(3, 4, 0.125)
    assert s.push_frames(g1[:2], now=0.0) == 0  # the group's engine frame is not in yet: nothing scheduled
    assert s.push_frames(g1[2:] + g2[:1], now=0.01) == 1
    assert s.push_frames(g3, now=0.02) == 1  # g2 lost its other frames (overwritten): its first one is dropped
    shown = [m for _, m in play(s, until=1.0)]
    assert [(m.group, m.index) for m in shown if m.group == 2] == []
    assert [m.index for m in shown if m.group == 3][-1] == 3 and {m.group for m in shown} == {1, 3}
