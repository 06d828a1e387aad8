"""Interpolators and their factory: loading, typed errors, tensors in and out, input checks, rounding, padding,
timesteps. (What vcam puts in place of an unavailable interpolator: tests/test_supervision.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.image import psnr
from engine.interp import InterpolatorUnavailable, create_interpolator
from engine.interp.base import timesteps
from engine.interp.blend import BlendInterpolator
from engine.interp.flow import FlowInterpolator
from engine.interp.frames import to_uint8
from engine.interp.motion_set import CASES, render
from engine.interp.rife import (CheckpointError, IFNetV3HD, IFNetV425, RifeInterpolator, build_net, detect_arch,
                                load_state_dict)

SHARED = Path(os.environ.get("FLUXRT_SHARED_MODELS") or Path(__file__).resolve().parents[1].parent / "shared" / "models")
V4, V3 = SHARED / "rife-v4.25" / "flownet.pkl", SHARED / "rife-v3-hd" / "flownet.pkl"
needs_weights = pytest.mark.skipif(not (V4.is_file() and V3.is_file()),
                                   reason=f"real RIFE weights not found in {SHARED} (set FLUXRT_SHARED_MODELS)")
NO_MODELS = Path("/nonexistent-models-dir")


@pytest.fixture(autouse=True)
def _no_user_models(monkeypatch):
    """Keep ~/.cache/fluxrt/models out of the picture; tests name their model folders explicitly."""
    monkeypatch.setattr("engine.interp.DEFAULT_MODELS_DIR", NO_MODELS)


@pytest.fixture(scope="module")
def any_rife():
    """Both real models, or {} where the weights are absent (tests of every interpolator still run)."""
    if not (V4.is_file() and V3.is_file()):
        return {}
    return {"rife-v4.25": RifeInterpolator.from_checkpoint(V4), "rife-v3-hd": RifeInterpolator.from_checkpoint(V3)}


@pytest.fixture(scope="module")
def rife(any_rife):
    if not any_rife:
        pytest.skip(f"real RIFE weights not found in {SHARED}")
    return any_rife


@pytest.fixture(scope="module")
def pair():
    case = next(c for c in CASES if c.name == "static-translate-rotate")
    return render(case, 0.0, 128), render(case, 0.5, 128), render(case, 1.0, 128)


def all_interpolators(rife=None):
    out = [FlowInterpolator(), BlendInterpolator()]
    return out + (list(rife.values()) if rife else [])


# ---- the real checkpoints ----------------------------------------------------------------------
@needs_weights
def test_real_checkpoints_load_strictly():
    arch, sd = load_state_dict(V4)
    assert arch == "rife-v4.25" and len(sd) == 158  # 198 minus 30 teacher.* and 10 caltime.*
    net = build_net(arch, sd, V4)
    assert 5.6e6 < sum(p.numel() for p in net.parameters()) < 5.7e6
    arch, sd = load_state_dict(V3)
    assert arch == "rife-v3-hd" and len(sd) == 120 and not any(k.startswith("module.") for k in sd)  # 160 minus block_tea
    build_net(arch, sd, V3)


@needs_weights
def test_factory_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(SHARED))
    assert create_interpolator("rife").name == "rife-v4.25"  # v4.25 preferred when present
    assert create_interpolator("auto").name == "flow"  # CPU: flow, weights or not
    # a user's FluxRT folder in the models dir comes before the shared folder
    user = tmp_path / "models" / "interpolation_model"
    user.mkdir(parents=True)
    (user / "flownet.pkl").symlink_to(V3)
    interp = create_interpolator("rife-v3-hd", models_dir=tmp_path / "models")
    assert interp.source == user / "flownet.pkl"
    # only v3 HD reachable: "rife" means v3 HD
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "empty"))
    assert create_interpolator("rife", models_dir=tmp_path / "models").name == "rife-v3-hd"
    # an explicit model_path (file or folder) wins over everything
    interp = create_interpolator("rife", model_path=V4.parent, models_dir=tmp_path / "models")
    assert (interp.name, interp.source) == ("rife-v4.25", V4)


@needs_weights
def test_explicit_path_of_the_other_version_is_a_typed_error():
    with pytest.raises(InterpolatorUnavailable) as e:
        create_interpolator("rife-v4.25", model_path=V3)
    assert e.value.method == "rife-v4.25" and "rife-v3-hd" in str(e.value) and str(V3) in str(e.value)


# ---- unavailable weights: typed errors, never a silent substitute ------------------------------
def test_missing_weights_are_a_typed_error_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "nothing"))
    for method in ("rife", "rife-v4.25", "rife-v3-hd"):
        with pytest.raises(InterpolatorUnavailable) as e:
            create_interpolator(method, models_dir=tmp_path / "models")
        msg = str(e.value)
        assert "no RIFE weights found" in msg and str(tmp_path / "models") in msg and "Fix:" in msg
    with pytest.raises(InterpolatorUnavailable, match="does not exist"):
        create_interpolator("rife", model_path=tmp_path / "nope.pkl")


def test_corrupt_checkpoint_falls_back_to_flow(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "nothing"))
    bad = tmp_path / "models" / "rife-v4.25" / "flownet.pkl"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_state_dict(bad)
    with pytest.raises(InterpolatorUnavailable) as e:
        create_interpolator("rife", models_dir=tmp_path / "models")
    assert str(bad) in str(e.value) and "not a readable torch checkpoint" in str(e.value)
    assert isinstance(e.value.__cause__, CheckpointError)


def test_truncated_real_checkpoint_is_corrupt(tmp_path):
    sd = IFNetV425().state_dict()
    good = tmp_path / "good.pkl"
    torch.save(sd, good)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InterpolatorUnavailable, match="not a readable torch checkpoint"):
        create_interpolator("rife", model_path=cut)


def test_unknown_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "flownet.pkl"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(8)}, path)
    with pytest.raises(CheckpointError, match="unknown RIFE architecture"):
        load_state_dict(path)
    with pytest.raises(InterpolatorUnavailable, match="unknown RIFE architecture"):
        create_interpolator("rife", model_path=tmp_path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict(path)


def test_student_weights_load_strictly_and_training_keys_are_ignored(tmp_path):
    sd = {f"module.{k}": v for k, v in IFNetV3HD().state_dict().items()}
    sd["module.block_tea.conv0.0.0.weight"] = torch.zeros(45, 14, 3, 3)  # training only: ignored
    path = tmp_path / "v3.pkl"
    torch.save(sd, path)
    assert RifeInterpolator.from_checkpoint(path).name == "rife-v3-hd"
    missing = dict(sd)
    del missing["module.block2.conv2.2.bias"]
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match="1 missing"):
        RifeInterpolator.from_checkpoint(path)
    extra = dict(sd)
    extra["module.block3.conv0.0.0.weight"] = torch.zeros(45, 11, 3, 3)
    torch.save(extra, path)
    with pytest.raises(CheckpointError, match="unexpected"):
        RifeInterpolator.from_checkpoint(path)
    v4 = IFNetV425().state_dict()
    v4["block4.lastconv.0.weight"] = torch.zeros(32, 40, 4, 4)  # another variant's head
    torch.save(v4, path)
    with pytest.raises(CheckpointError, match="other shapes"):
        RifeInterpolator.from_checkpoint(path)
    assert detect_arch(list(IFNetV425().state_dict())) == "rife-v4.25"


def test_factory_rejects_unknown_methods_and_devices():
    with pytest.raises(ValueError, match="unknown interpolation method"):
        create_interpolator("sharpen")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            create_interpolator("rife", device="cuda")
    assert create_interpolator("auto", device="cpu").name == "flow"
    assert create_interpolator("blend").name == "blend"


# ---- timesteps, factor, bad input --------------------------------------------------------------
@pytest.mark.parametrize("factor", [0, -1, -4, 2.0, "2"])
def test_bad_factor_is_a_clear_error(factor):
    with pytest.raises(ValueError, match="interpolation factor must be an integer >= 1"):
        timesteps(factor)


def test_timesteps_and_empty_requests(pair):
    assert timesteps(1) == [] and timesteps(4) == [0.25, 0.5, 0.75]
    a, _, b = pair
    for interp in all_interpolators():
        assert interp.interpolate_numpy(a, b, []) == []
        for bad in ([0.0], [1.0], [0.5, 1.5], [-0.2]):
            with pytest.raises(ValueError, match="strictly between 0 and 1"):
                interp.interpolate_numpy(a, b, bad)


def _bad_inputs(a):
    return [
        (a, a[:-1], "same size"),
        (a[:, :, 0], a[:, :, 0], "RGB|uint8"),
        (np.concatenate([a, a[..., :1]], -1), np.concatenate([a, a[..., :1]], -1), "RGB|uint8"),
        (a.astype(np.float32), a.astype(np.float32), "uint8"),
    ]


def test_bad_frames_are_clear_errors(pair, any_rife):
    a, _, _ = pair
    for interp in all_interpolators(any_rife):
        for x, y, msg in _bad_inputs(a):
            with pytest.raises(ValueError, match=msg):
                interp.interpolate_numpy(x, y, [0.5])


# ---- rounding ----------------------------------------------------------------------------------
def test_to_uint8_rounds():
    got = to_uint8(np.array([10.4, 10.6, 11.5, 254.7, -3.0, 300.0]))
    assert got.tolist() == [10, 11, 12, 255, 0, 255]
    # blend: 10 -> 13 at t=1/4 is 10.75: rounding gives 11, truncation would give 10
    a, b = np.full((4, 4, 3), 10, np.uint8), np.full((4, 4, 3), 13, np.uint8)
    assert BlendInterpolator().interpolate_numpy(a, b, [0.25])[0].max() == 11


def test_identical_frames_come_back_exactly(any_rife):
    """Levels survive uint8 -> float -> uint8 through each interpolator: that needs rounding
    (v/255*255 is often v - 1e-5 in float32, which truncation turns into v - 1)."""
    levels = list(range(0, 256, 15)) + [254, 255]
    for interp in all_interpolators(any_rife):
        for v in levels:
            f = np.full((8, 8, 3), v, np.uint8)
            for out in interp.interpolate_numpy(f, f, [0.3, 0.5]):
                assert np.array_equal(out, f), (interp.name, v, int(np.abs(out.astype(int) - f).max()))
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :], 4, 0)  # every level, for the exact path
    frame = np.stack([ramp, ramp[:, ::-1], np.roll(ramp, 77, 1)], -1)
    assert np.array_equal(BlendInterpolator().interpolate_numpy(frame, frame, [0.3])[0], frame)


def test_outputs_are_rounded_not_truncated(any_rife, pair):
    """The uint8 frames are the rounded float frames; truncation would differ on ~half the pixels."""
    a, _, b = pair
    for interp in any_rife.values():
        f = interp.interpolate_float(a, b, [0.5]).float().clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        out = interp.interpolate_numpy(a, b, [0.5])[0].astype(int)
        assert np.abs(out - np.rint(f)).max() <= 1 and np.mean(out == np.rint(f)) > 0.999, interp.name
        assert np.mean(out != np.floor(f)) > 0.2, interp.name
    flow = FlowInterpolator()
    f = flow.interpolate_float(a, b, [0.5])[0]
    out = flow.interpolate_numpy(a, b, [0.5])[0].astype(int)
    assert np.array_equal(out, np.clip(np.rint(f), 0, 255)) and np.mean(out != np.floor(f)) > 0.2


# ---- sizes and devices -------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(97, 131), (65, 64), (33, 250), (8, 8)])
def test_any_frame_size_is_padded_and_cropped_back(any_rife, shape):
    """Odd sizes: output keeps the input's size, and content stays in place (no shift from padding)."""
    H, W = shape
    case = next(c for c in CASES if c.name == "pan-20")
    full = render(case, 0.0, 256)
    a = np.ascontiguousarray(full[:H, :W])
    for interp in all_interpolators(any_rife):
        out = interp.interpolate_numpy(a, a, [0.5])[0]
        assert out.shape == (H, W, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - a).mean() < 1.0, interp.name


def test_flow_handles_odd_sizes_without_weights():
    rng = np.random.default_rng(0)
    for H, W in ((97, 131), (5, 7), (1, 1)):
        a = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        for interp in all_interpolators():
            assert interp.interpolate_numpy(a, a, [0.5])[0].shape == (H, W, 3)


def test_tensor_inputs_match_numpy(rife, pair):
    a, _, b = pair
    for interp in rife.values():
        ref = interp.interpolate_numpy(a, b, [0.5])[0]
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        got = interp.interpolate_tensors(ta, tb, [0.5])
        assert got.dtype == torch.uint8 and got.shape == (1, *a.shape) and got.device == interp.device
        assert np.array_equal(got[0].numpy(), ref)
        fa, fb = ta.permute(2, 0, 1).float() / 255, tb.permute(2, 0, 1).float() / 255  # (3, H, W) in [0, 1]
        assert np.array_equal(interp.interpolate(fa, fb.unsqueeze(0), [0.5])[0].numpy(), ref)
        with pytest.raises(ValueError, match="float frame"):
            interp.interpolate(fa[:2], fb[:2], [0.5])


def test_tensors_in_tensors_out(any_rife, pair):
    """The worker's path: uint8 (H, W, 3) tensors in, a list of such tensors out (RIFE: on the frames' device;
    host interpolators: on the CPU, where they computed them), the same pixels as the host-array entry; strided views are fine; a host interpolator refuses numpy in `interpolate`."""
    a, _, b = pair
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for interp in all_interpolators(any_rife):
        ref = interp.interpolate_numpy(a, b, [0.25, 0.5])
        for dev in devices:
            if isinstance(interp, RifeInterpolator) and interp.device.type != torch.device(dev).type:
                continue
            ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
            got = interp.interpolate(ta, tb, [0.25, 0.5])
            assert len(got) == 2 and all(isinstance(g, torch.Tensor) for g in got), interp.name
            for g, r in zip(got, ref):
                want = ta.device if isinstance(interp, RifeInterpolator) else torch.device("cpu")
                assert g.dtype == torch.uint8 and g.shape == a.shape and g.device == want, interp.name
                assert np.array_equal(g.cpu().numpy(), r), interp.name
        # a non-contiguous view (every other row of a taller frame) is read as the frame it shows
        tall = torch.from_numpy(np.repeat(a, 2, axis=0))[::2]
        assert not tall.is_contiguous()
        assert np.array_equal(interp.interpolate(tall, torch.from_numpy(b), [0.5])[0].numpy(), ref[1]), interp.name
    for host in all_interpolators():
        with pytest.raises(ValueError, match="torch tensor"):
            host.interpolate(a, b, [0.5])


# batched timesteps (v4.25) and the fp16 CUDA dtype are checked against the reference IFNet code, not
# against our own fp32 / one-at-a-time path: tests/test_rife_golden.py


def test_v3_bisects_and_shares_midpoints(rife, pair, monkeypatch):
    a, truth, b = pair
    v3 = rife["rife-v3-hd"]
    calls = []
    forward = v3.net.forward
    monkeypatch.setattr(v3.net, "forward", lambda *x, **k: calls.append(1) or forward(*x, **k))
    out = v3.interpolate_numpy(a, b, timesteps(4))
    assert len(calls) == 3  # 1/2, then 1/4 and 3/4 from it
    assert np.array_equal(out[1], v3.interpolate_numpy(a, b, [0.5])[0])
    calls.clear()
    third = v3.interpolate_numpy(a, b, [1 / 3])[0]  # not dyadic: bisect to 1/16, blend the two around it
    assert len(calls) == v3.bisect_depth
    assert third.shape == a.shape
    assert psnr(third, render(next(c for c in CASES if c.name == "static-translate-rotate"), 1 / 3, 128)) > 30


def test_rife_picks_dtype_by_device():
    net = IFNetV3HD()
    assert RifeInterpolator(net, "rife-v3-hd", device="cpu").dtype == torch.float32
    if torch.cuda.is_available():
        assert RifeInterpolator(IFNetV3HD(), "rife-v3-hd", device="cuda").dtype == torch.float16


def test_factory_copy_of_weights_into_models_dir(tmp_path, monkeypatch):
    """A models dir set up like `<models_dir>/rife-v4.25/flownet.pkl` (random weights) is found first."""
    monkeypatch.setenv("FLUXRT_SHARED_MODELS", str(tmp_path / "nothing"))
    target = tmp_path / "models" / "rife-v4.25" / "flownet.pkl"
    target.parent.mkdir(parents=True)
    torch.save(IFNetV425().state_dict(), target)
    interp = create_interpolator("rife", models_dir=tmp_path / "models")
    assert (interp.name, interp.source) == ("rife-v4.25", target)


def test_views_and_read_only_frames_are_accepted(any_rife, pair):
    """Frames straight from shared memory (read-only) or channel-flipped views (negative strides)."""
    a, truth, b = pair
    ro_a, ro_b = a.copy(), b.copy()
    ro_a.setflags(write=False)
    ro_b.setflags(write=False)
    for interp in all_interpolators(any_rife):
        ref = interp.interpolate_numpy(a, b, [0.5])[0]
        assert np.array_equal(interp.interpolate_numpy(ro_a, ro_b, [0.5])[0], ref), interp.name
        flipped = interp.interpolate_numpy(a[..., ::-1], b[..., ::-1], [0.5])[0]
        # the same scene in BGR order: as good as in RGB (flow sees other grey levels, RIFE other channels)
        assert flipped.shape == a.shape and psnr(flipped[..., ::-1], truth) > psnr(ref, truth) - 1.5, interp.name
