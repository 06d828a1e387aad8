"""Supervisor behaviour beyond a single restart: backoff, tracebacks; the recording sink; the inference worker's
frame path into a real OUTPUT channel; the fallback policy (vcam/fallbacks.py) and its README table."""
import multiprocessing as mp
import os
import signal
import time

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engine import EditResult, Engine, EngineStats, PassthroughEngine
from engine.interp.base import Interpolator
from engine.options import CacheOptions, InterpolationOptions

from tests.daemon_helpers import daemon_config, wait_until
from vcam.supervisor.child import Links, run_child
from vcam.daemon import Daemon
from vcam.messages import ChildError
from vcam.fallbacks import (INTERP_RETRY_GROUPS, POLICY, GuardedInterpolator, build_engine, build_interpolator,
                            policy_markdown)
from vcam.inference.host_copy import HostCopy
from vcam.inference.worker import InferenceWorker
from vcam.messages import Settings
from vcam.shm import ChannelSpec, Doorbell, FrameChannel, FrameMeta
from vcam.output.sinks.recorder import RecorderSink


@pytest.mark.timeout(120)
def test_repeated_crashes_back_off_instead_of_looping_hot(tmp_path):
    d = Daemon(daemon_config(tmp_path / "camera.log"))
    d.start()
    try:
        delays = []
        for n in range(1, 5):
            pid = wait_until(lambda: (s := d.status()["inference"])["alive"] and s["pid"], timeout=20)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: d.status()["inference"]["restarts"] == n, timeout=20, every=0.01)
            delays.append(time.monotonic() - t0)
        assert delays[0] < 1.0  # the first restart is immediate
        assert delays[3] > 1.4 and delays[3] > 2 * delays[0]  # 0.2, 0.4, 0.8, 1.6 s
        assert d.status()["output"]["restarts"] == 0  # the camera side never went down
    finally:
        d.stop()


def _explode() -> None:
    raise RuntimeError("engine exploded")


def _child_main(links: Links) -> None:
    run_child("inference", links, "critical", _explode)


def test_a_child_that_raises_reports_its_traceback_before_dying():
    ctx = mp.get_context("spawn")
    status = ctx.Queue()
    spec = ChannelSpec("unused", 16, 16, 2)
    links = Links(spec, Doorbell(ctx), spec, Doorbell(ctx), ctx.Queue(), status)
    p = ctx.Process(target=_child_main, args=(links,))
    p.start()
    msg = status.get(timeout=30)
    p.join(10)
    assert p.exitcode == 1
    assert isinstance(msg, ChildError) and msg.role == "inference"
    assert msg.error == "RuntimeError: engine exploded" and "Traceback" in msg.traceback and "body" in msg.traceback


def test_recorder_writes_a_readable_video(tmp_path):
    path = tmp_path / "rec.avi"
    rec = RecorderSink(path, 64, 48, 10)
    for i in range(5):
        rec.send(np.full((48, 64, 3), 40 * i, np.uint8))
    rec.close()
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f.mean())
    assert len(frames) == 5 and rec.status["frames"] == 5 and rec.status["error"] is None
    assert frames[4] > frames[1] + 60


def test_recorder_bad_path_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rec = RecorderSink(blocker / "rec.mp4", 64, 48, 10)  # its folder cannot exist: a file is in the way
    rec.send(np.zeros((48, 64, 3), np.uint8))
    rec.close()
    assert rec.status["frames"] == 0 and "cannot record to" in rec.status["error"]


def test_recorder_does_not_create_a_missing_folder(tmp_path):
    # the config refuses such a path up front; should the folder vanish later, the sink reports, never mkdirs
    rec = RecorderSink(tmp_path / "typo" / "deeper" / "rec.avi", 64, 48, 10)
    rec.send(np.zeros((48, 64, 3), np.uint8))
    rec.close()
    assert not (tmp_path / "typo").exists()
    assert rec.status["frames"] == 0 and "existing, writable folder" in rec.status["error"]


# ---- the inference worker's frame path ---------------------------------------------------------
class _MaskEngine(Engine):
    """Edits nothing, but reports a recomputed-cells mask the way a cached engine does."""

    name = "mask"

    def edit(self, frame, *, prompt, seed=None, steps=None):
        mask = np.zeros((frame.shape[0] // 16, frame.shape[1] // 16), bool)
        mask[1, 2] = True
        return EditResult(torch.from_numpy(frame), mask, EngineStats())


@pytest.fixture
def worker(tmp_path):
    cfg = daemon_config(tmp_path / "camera.log")
    ctx = mp.get_context("spawn")
    w_, h_ = cfg.engine.width, cfg.engine.height
    inp, out = FrameChannel.create("test-in", w_, h_, 2), FrameChannel.create("test-out", w_, h_, 8)
    links = Links(inp.spec, Doorbell(ctx), out.spec, Doorbell(ctx), ctx.Queue(), ctx.Queue())
    w = InferenceWorker(cfg, links)
    reader = FrameChannel.attach(out.spec)
    yield w, reader, (h_, w_, 3)
    for ch in (reader, w.input, w.output, inp, out):
        ch.close()


def test_worker_writes_each_group_whole_into_the_output_channel(worker):
    """Engine frame -> interpolator -> one copy per frame into OUTPUT: factor 3 gives two blended frames, then
    the engine frame, each slot holding the right pixels, group numbers and the engine's mask."""
    w, reader, shape = worker
    w.engine = _MaskEngine()
    w.apply(Settings(4, "x", 0, 2, interpolation=InterpolationOptions(method="blend", factor=3)))
    w.process(np.full(shape, 30, np.uint8), FrameMeta(1, 1.0))
    w.process(np.full(shape, 90, np.uint8), FrameMeta(2, 2.0))
    got, lost = reader.read_new()
    assert lost == 0 and len(got) == 4
    frames, metas = [f for f, _ in got], [m for _, m in got]
    assert [(m.frame_id, m.group, m.index, m.count) for m in metas] == [(1, 1, 0, 1), (2, 2, 0, 3), (2, 2, 1, 3),
                                                                        (2, 2, 2, 3)]
    assert [int(f.min()) for f in frames] == [30, 50, 70, 90] and all(f.min() == f.max() for f in frames)
    assert all(m.prompt_version == 4 and m.mask is not None and m.mask.sum() == 1 and m.mask[1, 2] for m in metas)
    st = w.status()
    assert st["frames"] == 2 and st["interpolator"] == "blend" and st["host_copy"] == "cpu"
    w.apply(Settings(5, "x", 0, 2, mode="passthrough", interpolation=InterpolationOptions(method="blend", factor=3)))
    w.process(np.full(shape, 120, np.uint8), FrameMeta(3, 3.0))
    got, _ = reader.read_new()
    assert [m.mask for _, m in got] == [None] * 3  # no engine ran: no mask


# ---- the fallback policy -----------------------------------------------------------------------
class _Flaky(Interpolator):
    name = "flaky"

    def __init__(self, fail: int):
        self.fail, self.calls = fail, 0

    def interpolate(self, a, b, ts):
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("CUDA out of memory")
        return [torch.zeros_like(a) for _ in ts]


def test_a_transient_interpolator_error_blends_one_stretch_then_retries():
    g = GuardedInterpolator(_Flaky(fail=1), note="built with a note")
    a, b = torch.full((16, 16, 3), 10, dtype=torch.uint8), torch.full((16, 16, 3), 30, dtype=torch.uint8)
    assert [int(f[0, 0, 0]) for f in g.interpolate(a, b, [0.5])] == [20]  # failed: blend for this group
    assert g.errors == 1 and "flaky failed" in g.note and "CUDA out of memory" in g.last_error
    for _ in range(INTERP_RETRY_GROUPS):
        assert int(g.interpolate(a, b, [0.5])[0][0, 0, 0]) == 20
    assert g.interp.calls == 1  # not tried while backing off
    assert int(g.interpolate(a, b, [0.5])[0][0, 0, 0]) == 0  # tried again, and it works: not demoted
    assert g.name == "flaky" and g.errors == 1 and g.note == "built with a note"


def test_missing_rife_weights_fall_back_to_flow_and_say_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "nothing"))
    interp, note = build_interpolator("rife", 2, None, "cpu", tmp_path / "models")
    assert interp.name == "flow" and note.startswith("interpolation: using flow instead of rife: no RIFE weights")
    assert "Fix:" in note and str(tmp_path / "models") in note
    assert build_interpolator("rife", 1, None, "cpu", tmp_path) == (None, None)  # factor 1: no interpolation

    def broken(*a, **k):
        raise RuntimeError("no OpenCV")

    monkeypatch.setattr("engine.interp.create_interpolator", broken)
    interp, note = build_interpolator("flow", 2, None, "cpu", tmp_path)
    assert interp.name == "blend" and note == "interpolator failed (no OpenCV); using blend"


def test_an_engine_that_cannot_start_passes_frames_through(tmp_path):
    cfg = daemon_config(tmp_path / "camera.log", **{"engine.name": "flux2", "engine.models_dir": str(tmp_path),
                                                     "engine.model": "FLUX.2-klein-4B"})
    built = build_engine(cfg)
    assert isinstance(built.engine, PassthroughEngine) and built.note is None
    assert built.error.startswith("engine flux2 failed to start: ") and "frames pass through unedited" in built.error
    assert str(tmp_path) in built.error  # the real cause (no weights in models_dir), named


def test_readme_table_is_the_code_policy():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## When something fails", 1)[1].split("\n## ", 1)[0]
    assert policy_markdown() in section, "README's table differs from vcam/fallbacks.py POLICY: paste policy_markdown()"
    for row in POLICY.values():  # every row says all four things
        assert all((row.failure, row.replacement, row.status, row.recovery))


def test_host_copy_fills_a_slot_from_any_tensor(worker):
    """The worker's one copy per frame: a contiguous or strided uint8 tensor lands in the slot as it is;
    a tensor of another shape or dtype is refused (a GPU's page-locked path runs the same code where CUDA is)."""
    w, reader, shape = worker
    copier = HostCopy(w.output)
    src = torch.arange(np.prod(shape), dtype=torch.int64).remainder(251).to(torch.uint8).reshape(shape)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for i, dev in enumerate(devices):
        for j, frame in enumerate((src, src.flip(0))):
            with w.output.writing(FrameMeta(10 * i + j, 0.0)) as slot:
                copier.copy(frame.to(dev), slot)
            got, _ = reader.read_latest()
            assert np.array_equal(got, frame.numpy()), (dev, j)
        view = torch.cat([src, src], dim=1)[:, ::2].to(dev)  # non-contiguous columns
        with w.output.writing(FrameMeta(99, 0.0)) as slot:
            copier.copy(view, slot)
        assert np.array_equal(reader.read_latest()[0], view.cpu().numpy())
        assert copier.mode == "cpu" if dev == "cpu" else copier.mode in ("registered", "staged")
    with pytest.raises(ValueError, match="does not fit the slot"):
        copier.copy(src.float(), np.empty(shape, np.uint8))
    copier.close()


class _PickyEngine(_MaskEngine):
    """Refuses any cache settings; takes style references."""

    style = None

    def configure_cache(self, options):
        raise MemoryError("cache: no device memory for the cache buffers")

    def set_style_reference(self, ref):
        self.style = ref


OFF = InterpolationOptions(method="none", factor=1)


def test_a_live_change_that_fails_keeps_its_old_value_and_the_others_apply(worker):
    w, _, _ = worker
    w.engine = _PickyEngine()
    w.apply(Settings(3, "x", 0, 2, style_reference="/tmp/style.png", interpolation=OFF, cache=CacheOptions(tau=200.0)))
    assert w.engine.style == "/tmp/style.png"
    assert w.status()["settings_error"] == "settings 3 not fully applied: cache: no device memory for the cache buffers"
    w.engine = _MaskEngine()  # the base interface accepts both (no cache, no style): nothing to report
    w.apply(Settings(4, "x", 0, 2, style_reference="/tmp/style.png", interpolation=OFF, cache=CacheOptions(tau=4.0)))
    assert w.status()["settings_error"] is None
