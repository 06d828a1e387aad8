import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path
import zlib

import numpy as np
import pytest

from tests.daemon_helpers import shm_names
from vcam.shm import Doorbell, FrameChannel, FrameMeta

W, H = 160, 96


@pytest.fixture
def channel():
    """Makes W x H test channels and unlinks them after the test, whatever happens."""
    made = []

    def make(slots: int) -> FrameChannel:
        made.append(FrameChannel.create("test", W, H, slots=slots))
        return made[-1]

    yield make
    for ch in made:
        ch.close()


def pattern(i: int) -> np.ndarray:
    # every byte depends on the frame number, so a frame mixed from two writes cannot pass
    base = np.arange(H * W * 3, dtype=np.uint32).reshape(H, W, 3)
    return ((base * 31 + i * 97) % 251).astype(np.uint8)


def _writer(spec, bell, n):
    ch = FrameChannel.attach(spec)
    for i in range(n):
        ch.write(pattern(i), FrameMeta(i, time.monotonic(), prompt_version=i % 7))
        bell.ring()
    ch.close()


@pytest.mark.timeout(120)
def test_no_torn_frames_under_concurrent_writer_and_reader(channel):
    ctx = mp.get_context("spawn")
    ch = channel(slots=3)
    bell = Doorbell(ctx)
    n = 6000
    p = ctx.Process(target=_writer, args=(ch.spec, bell, n))
    p.start()
    seen, last_id = 0, -1
    while p.is_alive() or ch.written > last_id + 1:
        bell.wait(0.05)
        got = ch.read_latest()
        if got is None:
            continue
        frame, meta = got
        assert meta.frame_id > last_id  # the newest, never going back
        assert zlib.crc32(frame.tobytes()) == zlib.crc32(pattern(meta.frame_id).tobytes()), meta
        assert meta.prompt_version == meta.frame_id % 7
        last_id = meta.frame_id
        seen += 1
    p.join(10)
    assert p.exitcode == 0
    assert last_id == n - 1  # the final frame is always readable
    assert seen > 100  # the reader really ran alongside the writer


def test_latest_frame_wins_and_is_read_once(channel):
    ch = channel(slots=3)
    for i in range(5):
        ch.write(pattern(i), FrameMeta(i, 0.0))
    frame, meta = ch.read_latest()
    assert meta.frame_id == 4 and np.array_equal(frame, pattern(4))
    assert ch.read_latest() is None  # nothing new
    ch.write(pattern(5), FrameMeta(5, 0.0))
    assert ch.read_latest()[1].frame_id == 5


def test_read_new_returns_every_unseen_frame_in_order_and_counts_losses(channel):
    ch = channel(slots=4)
    for i in range(3):
        ch.write(pattern(i), FrameMeta(i, 0.0, group=1, index=i, count=3))
    frames, lost = ch.read_new()
    assert [m.frame_id for _, m in frames] == [0, 1, 2] and lost == 0
    assert frames[-1][1].is_engine_frame and not frames[0][1].is_engine_frame
    for i in range(3, 12):  # more than the ring holds
        ch.write(pattern(i), FrameMeta(i, 0.0))
    frames, lost = ch.read_new()
    assert [m.frame_id for _, m in frames] == [9, 10, 11] and lost == 6


def test_wrong_frame_shape_is_refused(channel):
    ch = channel(slots=2)
    with pytest.raises(ValueError, match="does not match"):
        ch.write(np.zeros((H, W + 1, 3), np.uint8), FrameMeta(0, 0.0))


ATTACH_AND_EXIT = """
import sys
from vcam.shm import ChannelSpec, FrameChannel
ch = FrameChannel.attach(ChannelSpec(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 2))
ch.close()  # an orderly exit: with a tracked attach, Python's resource tracker would unlink here
"""


def test_owner_unlinks_and_attachers_never_do():
    before = shm_names()
    ch = FrameChannel.create("test", W, H, slots=2)
    assert ch.spec.name in shm_names()
    # a separate interpreter with its own resource tracker, as a process that is not our child would be
    r = subprocess.run([sys.executable, "-c", ATTACH_AND_EXIT, ch.spec.name, str(W), str(H)],
                       capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    assert ch.spec.name in shm_names()  # an attacher leaving does not remove the supervisor's segment
    ch.close()
    assert shm_names() == before


def test_doorbell_wakes_and_times_out():
    bell = Doorbell(mp.get_context("spawn"))
    t0 = time.monotonic()
    assert bell.wait(0.05) is False and time.monotonic() - t0 >= 0.04
    bell.ring()
    bell.ring()
    assert bell.wait(1.0) is True
    assert bell.wait(0.0) is False  # both rings were drained


def test_mask_travels_with_its_frame(channel):
    ch = channel(slots=3)
    mask = np.zeros(ch.mask_shape, bool)
    mask[1, 2:5] = True
    ch.write(pattern(0), FrameMeta(0, 0.0, mask=mask))
    ch.write(pattern(1), FrameMeta(1, 0.0))
    frames, _ = ch.read_new()
    assert ch.mask_shape == (H // 16, W // 16)
    assert np.array_equal(frames[0][1].mask, mask) and frames[1][1].mask is None


def test_too_little_shared_memory_is_refused_with_the_fix(tmp_path):
    from vcam.shm import ChannelError, check_space

    check_space(1, "input")  # fits
    with pytest.raises(ChannelError, match=r"output frame channel needs .* MB .*--shm-size"):
        check_space(10**18, "output")


def test_writing_in_place_publishes_on_exit_and_nothing_on_error(channel):
    ch = channel(3)
    reader = FrameChannel.attach(ch.spec)
    try:
        with ch.writing(FrameMeta(7, 1.0, prompt_version=2)) as slot:
            assert slot.shape == (H, W, 3) and slot.dtype == np.uint8 and slot.flags.writeable
            assert reader.read_latest() is None  # not published while it is being filled
            slot[...] = pattern(7)
        frame, meta = reader.read_latest()
        assert np.array_equal(frame, pattern(7)) and (meta.frame_id, meta.prompt_version) == (7, 2)
        with pytest.raises(RuntimeError):
            with ch.writing(FrameMeta(8, 2.0)) as slot:
                slot[...] = 0
                raise RuntimeError("the copy failed")
        assert ch.written == 1 and reader.read_latest() is None  # the half-written frame was never published
        ch.write(pattern(9), FrameMeta(9, 3.0))
        frame, meta = reader.read_latest()
        assert meta.frame_id == 9 and np.array_equal(frame, pattern(9))
    finally:
        reader.close()


def test_shm_imports_without_torch():
    """The output process and the supervisor read channels without paying for torch."""
    code = "import sys, vcam.shm; assert 'torch' not in sys.modules, 'vcam.shm imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
