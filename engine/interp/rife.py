"""RIFE IFNet, our own implementation of two trained architectures, loaded from their checkpoints.

- v4.25/4.26 (Practical-RIFE): an `encode` feature head and 5 IFBlocks (192, 128, 96, 64, 32 channels)
  at scales [16, 8, 4, 2, 1]; the timestep is an input map, so any t in (0, 1) is one forward.
- v3 HD (ECCV2022-RIFE `flownet.pkl`, the model FluxRT uses): 3 IFBlocks of 90 channels with PReLU at
  scales [4, 2, 1]; each block runs on both frame orders and the results are averaged, as trained.
  Midpoint only: other timesteps come from recursive bisection.

Images enter the networks as BGR in [0, 1] (both were trained on frames read with cv2). Flows are in
pixels: channels 0-1 take the output back to frame 0, channels 2-3 to frame 1.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.interp.base import Interpolator
from engine.interp.frames import check_timesteps

Arch = Literal["rife-v4.25", "rife-v3-hd"]
# keys that only the training graph uses (distillation teacher, timestep calibration)
TRAINING_ONLY_PREFIXES = ("teacher.", "caltime.", "block_tea.")


class CheckpointError(ValueError):
    """A file that is not a usable RIFE checkpoint; the message names the file, the problem and the fix."""


def warp(x: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: out(p) = x(p + flow(p)). x (B, C, H, W), flow (B, 2, H, W) in pixels.

    Bilinear, border padding, align_corners=True on a normalised grid: the convention both models
    were trained with. The grid is built in fp32 (fp16 grids lose ~0.5 px at 1024 px widths).
    """
    B, _, H, W = flow.shape
    gx = torch.linspace(-1.0, 1.0, W, device=flow.device, dtype=torch.float32).view(1, 1, W).expand(B, H, W)
    gy = torch.linspace(-1.0, 1.0, H, device=flow.device, dtype=torch.float32).view(1, H, 1).expand(B, H, W)
    f = flow.float()
    grid = torch.stack((gx + f[:, 0] * (2.0 / max(W - 1, 1)), gy + f[:, 1] * (2.0 / max(H - 1, 1))), dim=-1)  # (B, H, W, 2)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(x.dtype)


def _resize(x: Tensor, scale: float) -> Tensor:
    if scale == 1.0:
        return x
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


# ---- v4.25 ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class V425Config:
    widths: tuple[int, ...] = (192, 128, 96, 64, 32)
    scales: tuple[float, ...] = (16.0, 8.0, 4.0, 2.0, 1.0)
    feat: int = 4  # encode head output channels
    block_feat: int = 8  # feature channels a block hands to the next
    res_convs: int = 8
    pad: int = 64  # the coarsest block sees 1/64 of the padded frame


class Head(nn.Module):
    """Per-frame features: (B, 3, H, W) -> (B, 4, H, W)."""

    def __init__(self, out: int = 4):
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, out, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.cnn0(x), 0.2)
        x = F.leaky_relu(self.cnn1(x), 0.2)
        x = F.leaky_relu(self.cnn2(x), 0.2)
        return self.cnn3(x)


class ResConv(nn.Module):
    """leaky_relu(conv(x) * beta + x); `fold_()` moves beta into the conv (one elementwise pass fewer)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, c, 1, 1))
        self.folded = False

    @torch.no_grad()
    def fold_(self) -> None:
        if not self.folded:
            self.conv.weight.mul_(self.beta.view(-1, 1, 1, 1))
            self.conv.bias.mul_(self.beta.view(-1))
            self.beta.fill_(1.0)  # the state stays valid for the unfolded formula too
            self.folded = True

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x) if self.folded else self.conv(x) * self.beta
        return F.leaky_relu(y.add_(x), 0.2, inplace=True)


def _conv_lrelu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True))


class BlockV4(nn.Module):
    """Input (B, cin, H/s, W/s) -> flow delta (B, 4, H, W), mask logit (B, 1, H, W), feature (B, 8, H, W)."""

    def __init__(self, cin: int, c: int, cfg: V425Config):
        super().__init__()
        self.conv0 = nn.Sequential(_conv_lrelu(cin, c // 2), _conv_lrelu(c // 2, c))  # 1/4 of the block's scale
        self.convblock = nn.Sequential(*[ResConv(c) for _ in range(cfg.res_convs)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * (5 + cfg.block_feat), 4, 2, 1), nn.PixelShuffle(2))

    def forward(self, x: Tensor, scale: float) -> tuple[Tensor, Tensor, Tensor]:
        """x: the block's input already at 1/scale (resize, then concatenate: bilinear resizing is per
        channel, so this equals the reference's concatenate-then-resize at a fraction of the copies)."""
        tmp = self.lastconv(self.convblock(self.conv0(x)))
        tmp = _resize(tmp, scale)
        return tmp[:, :4] * scale, tmp[:, 4:5], tmp[:, 5:]


class IFNetV425(nn.Module):
    def __init__(self, cfg: V425Config = V425Config()):
        super().__init__()
        self.cfg = cfg
        c_first = 3 + 3 + 2 * cfg.feat + 1  # img0, img1, f0, f1, t
        c_next = c_first + 1 + cfg.block_feat + 4  # + mask, feature, flow
        for i, c in enumerate(cfg.widths):
            self.add_module(f"block{i}", BlockV4(c_first if i == 0 else c_next, c, cfg))
        self.encode = Head(cfg.feat)

    def forward(self, img0: Tensor, img1: Tensor, t: Tensor, scale: float = 1.0) -> Tensor:
        """img0, img1 (1, 3, H, W) in [0, 1], H and W multiples of cfg.pad; t (B, 1, 1, 1) -> (B, 3, H, W)."""
        B = t.shape[0]
        f0, f1 = self.encode(torch.cat((img0, img1))).chunk(2)  # (1, 4, H, W) each, shared by all t
        src = torch.cat((torch.cat((img0, f0), 1), torch.cat((img1, f1), 1)))  # (2, 7, H, W): image + feature
        src_b = src.repeat_interleave(B, 0)  # (2B, 7, H, W): B copies of frame 0's, then of frame 1's
        flow = mask = feat = None
        for i, s in enumerate(self.cfg.scales):
            s = s / scale
            block = getattr(self, f"block{i}")
            if flow is None:
                x = _resize(src, 1.0 / s)  # (2, 7, h, w)
                x0, x1 = x[:1].expand(B, -1, -1, -1), x[1:].expand(B, -1, -1, -1)
            else:
                x = _resize(warped, 1.0 / s)  # (2B, 7, h, w)
                x0, x1 = x[:B], x[B:]
            h, w = x.shape[-2:]
            parts = [x0[:, :3], x1[:, :3], x0[:, 3:], x1[:, 3:], t.to(x.dtype).expand(B, 1, h, w)]
            if flow is None:
                flow, mask, feat = block(torch.cat(parts, 1), s)
            else:
                parts += [_resize(mask, 1.0 / s), _resize(feat, 1.0 / s), _resize(flow, 1.0 / s) / s]
                d, mask, feat = block(torch.cat(parts, 1), s)
                flow = flow + d
            # (2B, 7, H, W): img0 and f0 warped by flow[:, :2], img1 and f1 by flow[:, 2:4]
            # (the last block's output needs the images only)
            last = i == len(self.cfg.scales) - 1
            warped = warp(src_b[:, :3] if last else src_b, torch.cat((flow[:, :2], flow[:, 2:4])))
        m = torch.sigmoid(mask)
        return warped[:B, :3] * m + warped[B:, :3] * (1 - m)


# ---- v3 HD ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class V3HDConfig:
    width: int = 90
    blocks: int = 3
    scales: tuple[float, ...] = (4.0, 2.0, 1.0)
    pad: int = 32


def _conv_prelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


def _up_head(c: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.PReLU(c // 2), nn.ConvTranspose2d(c // 2, cout, 4, 2, 1))


class BlockV3(nn.Module):
    """(B, 7, H, W) images + mask and (B, 4, H, W) flow -> flow delta (B, 4, H, W), mask delta (B, 1, H, W)."""

    def __init__(self, cin: int, c: int):
        super().__init__()
        self.conv0 = nn.Sequential(_conv_prelu(cin, c // 2, 2), _conv_prelu(c // 2, c, 2))
        for i in range(4):
            self.add_module(f"convblock{i}", nn.Sequential(_conv_prelu(c, c), _conv_prelu(c, c)))
        self.conv1 = _up_head(c, 4)
        self.conv2 = _up_head(c, 1)

    def forward(self, x: Tensor, flow: Tensor, scale: float) -> tuple[Tensor, Tensor]:
        x = _resize(x, 1.0 / scale)
        flow = _resize(flow, 1.0 / scale) / scale
        feat = self.conv0(torch.cat((x, flow), 1))
        for i in range(4):
            feat = getattr(self, f"convblock{i}")(feat) + feat
        return _resize(self.conv1(feat), scale) * scale, _resize(self.conv2(feat), scale)


class IFNetV3HD(nn.Module):
    def __init__(self, cfg: V3HDConfig = V3HDConfig()):
        super().__init__()
        self.cfg = cfg
        for i in range(cfg.blocks):
            self.add_module(f"block{i}", BlockV3(3 + 3 + 1 + 4, cfg.width))

    def forward(self, img0: Tensor, img1: Tensor, scale: float = 1.0) -> Tensor:
        """Midpoint of img0, img1 (B, 3, H, W) in [0, 1], H and W multiples of cfg.pad -> (B, 3, H, W)."""
        B = img0.shape[0]
        src = torch.cat((img0, img1))  # (2B, 3, H, W)
        flow = img0.new_zeros(B, 4, *img0.shape[-2:])
        mask = img0.new_zeros(B, 1, *img0.shape[-2:])
        w0, w1 = img0, img1
        for i, s in enumerate(self.cfg.scales):
            # both frame orders in one batch: (w0, w1, mask) and (w1, w0, -mask) with the flow halves swapped
            x = torch.cat((torch.cat((w0, w1, mask), 1), torch.cat((w1, w0, -mask), 1)))
            fl = torch.cat((flow, torch.cat((flow[:, 2:4], flow[:, :2]), 1)))
            d, m = getattr(self, f"block{i}")(x, fl, s / scale)
            d0, d1 = d.chunk(2)
            m0, m1 = m.chunk(2)
            flow = flow + (d0 + torch.cat((d1[:, 2:4], d1[:, :2]), 1)) / 2
            mask = mask + (m0 - m1) / 2
            w0, w1 = warp(src, torch.cat((flow[:, :2], flow[:, 2:4]))).chunk(2)
        m = torch.sigmoid(mask)
        return w0 * m + w1 * (1 - m)


# ---- checkpoints ----------------------------------------------------------------------------------
def detect_arch(keys: Sequence[str]) -> Arch:
    """Architecture from a (prefix-stripped) state dict's keys; CheckpointError when neither matches."""
    ks = set(keys)
    if "encode.cnn0.weight" in ks and "block0.convblock.0.beta" in ks:
        return "rife-v4.25"
    if "block0.convblock0.0.0.weight" in ks and "block0.conv1.2.weight" in ks:
        return "rife-v3-hd"
    sample = ", ".join(sorted(ks)[:6]) or "no keys"
    raise CheckpointError(
        f"unknown RIFE architecture (keys: {sample}, ...); supported: RIFE v4.25/4.26 (keys 'encode.*', "
        "'block0..4.convblock.N.beta') and RIFE v3 HD (keys 'block0..2.convblock0..3', 'conv1', 'conv2')")


def load_state_dict(path: Path) -> tuple[Arch, dict[str, Tensor]]:
    """Read a flownet.pkl: strip `module.`, drop training-only keys, detect the architecture."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"RIFE checkpoint {path} does not exist")
    try:
        raw: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, arbitrary objects refused by weights_only, ...
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                              "download it again (RIFE v4.25: Practical-RIFE 'flownet.pkl'; v3 HD: ECCV2022-RIFE "
                              "train_log/flownet.pkl)") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict of tensors")
    sd = {k.removeprefix("module."): v for k, v in raw.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
    try:
        arch = detect_arch(list(sd))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return arch, sd


def build_net(arch: Arch, sd: dict[str, Tensor], path: Path | str = "<state dict>") -> nn.Module:
    """The student network with every weight loaded strictly; CheckpointError naming what does not fit."""
    net: nn.Module = IFNetV425() if arch == "rife-v4.25" else IFNetV3HD()
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} with other shapes (e.g. {wrong[0]}: {tuple(sd[wrong[0]].shape)} "
                         f"vs {tuple(own[wrong[0]].shape)})")
        raise CheckpointError(f"{path} looks like {arch} but its weights do not fit that architecture: "
                              f"{'; '.join(parts)}; use an original {arch} flownet.pkl")
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False)


# ---- the interpolator -----------------------------------------------------------------------------
def _pad_to(x: Tensor, multiple: int) -> Tensor:
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    # replicate the edges, not zeros as the reference scripts do: zeros bleed black into the last
    # rows and columns (a flat 30 came back as 29 there); on the motion set both are within 0.1 dB
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


@contextmanager
def _flush_denormals(enabled: bool) -> Iterator[None]:
    """Black or flat frames drive activations into denormal floats, which CPUs handle ~100x slower
    (v3 HD: 0.7 s instead of 5 ms for a small black frame). Flushing them to zero changes only values
    below ~1e-38. The flag is the process's (torch has no getter): set for the call, cleared after."""
    if not enabled or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class RifeInterpolator(Interpolator):
    """RIFE on any device: fp16 on CUDA, fp32 elsewhere. Frames are torch tensors, best already on the
    model's device: uint8 (H, W, 3) or float (3, H, W) / (1, 3, H, W) RGB in [0, 1]; the batch is built
    from them on the device. numpy uint8 (H, W, 3) frames are accepted too (uploaded once)."""

    def __init__(self, net: nn.Module, arch: Arch, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | None = None, source: Path | None = None, scale: float = 1.0,
                 max_batch: int = 4, bisect_depth: int = 4):
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        for m in net.modules():  # inference-only form of the loaded weights
            if isinstance(m, ResConv):
                m.fold_()
        self.net = net.to(self.device, self.dtype)
        self.arch: Arch = arch
        self.name = arch
        self.source = source
        self.scale = scale  # RIFE's `scale`: 0.5 for 4K-ish frames (coarser flow search)
        self.max_batch = max_batch  # v4.25: timesteps per forward
        self.bisect_depth = bisect_depth  # v3 HD: non-dyadic t blends the two dyadic frames 1/2**depth apart
        base = self.net.cfg.pad
        self.pad = base if scale >= 1.0 else int(base * round(1.0 / scale))

    @classmethod
    def from_checkpoint(cls, path: Path | str, *, device: str | torch.device = "cpu",
                        expect: Arch | None = None, **kw: Any) -> "RifeInterpolator":
        arch, sd = load_state_dict(Path(path))
        if expect is not None and arch != expect:
            raise CheckpointError(f"{path} holds a {arch} checkpoint, not {expect}; "
                                  f"set interpolation.method = \"rife\" or \"{arch}\", or point model_path at a {expect} file")
        return cls(build_net(arch, sd, path), arch, device=device, source=Path(path), **kw)

    # -- conversions --
    def _to_batch(self, x: Any, name: str) -> Tensor:
        """-> (1, 3, H, W) BGR in [0, 1] on the device, in the model's dtype."""
        if isinstance(x, np.ndarray):
            if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
                raise ValueError(f"frame {name} must be a uint8 (H, W, 3) RGB array, got {x.dtype} {x.shape}")
            # torch warns on read-only arrays (frames from shared memory): copy those (~0.1 ms)
            x = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x))
        if not isinstance(x, Tensor):
            raise ValueError(f"frame {name} must be a numpy array or a torch tensor, got {type(x).__name__}")
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            if x.ndim != 3 or x.shape[2] != 3:
                raise ValueError(f"uint8 frame {name} must be (H, W, 3) RGB, got shape {tuple(x.shape)}")
            x = x.permute(2, 0, 1).unsqueeze(0).to(self.dtype) / 255.0
        elif x.is_floating_point():
            if x.ndim == 3:
                x = x.unsqueeze(0)
            if x.ndim != 4 or x.shape[:2] != (1, 3):
                raise ValueError(f"float frame {name} must be (3, H, W) or (1, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
            x = x.to(self.dtype).clamp(0, 1)
        else:
            raise ValueError(f"frame {name} has dtype {x.dtype}; use uint8 (H, W, 3) or float (3, H, W) in [0, 1]")
        if x.shape[-1] < 1 or x.shape[-2] < 1:
            raise ValueError(f"frame {name} is empty: {tuple(x.shape)}")
        return x.flip(1)  # RGB -> BGR

    @torch.inference_mode()
    def interpolate_float(self, a: Any, b: Any, ts: Sequence[float]) -> Tensor:
        """Frames at each t before quantisation: (N, 3, H, W) RGB in [0, 1], model dtype, on the device."""
        ts = check_timesteps(ts)
        x0, x1 = self._to_batch(a, "a"), self._to_batch(b, "b")
        if x0.shape != x1.shape:
            raise ValueError(f"frames a and b must have the same size, got {tuple(x0.shape[-2:])} and {tuple(x1.shape[-2:])}")
        H, W = x0.shape[-2:]
        if not ts:
            return x0.new_empty(0, 3, H, W)
        p0, p1 = _pad_to(x0, self.pad), _pad_to(x1, self.pad)
        with _flush_denormals(self.device.type == "cpu"):
            out = self._v4(p0, p1, ts) if self.arch == "rife-v4.25" else self._bisect(p0, p1, ts)  # (N, 3, Hp, Wp)
        return out[:, :, :H, :W].flip(1)  # crop the padding, BGR -> RGB

    @torch.inference_mode()
    def interpolate_tensors(self, a: Any, b: Any, ts: Sequence[float]) -> Tensor:
        """Frames at each t as one uint8 (N, H, W, 3) RGB tensor on the device (one copy to the host later)."""
        out = self.interpolate_float(a, b, ts).float().clamp_(0, 1).mul_(255).round_()  # round: truncation costs ~1 dB
        return out.to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def interpolate(self, a: Tensor, b: Tensor, ts: Sequence[float]) -> list[Tensor]:
        """In-between frames on a's device (the CPU for a numpy array); no host copy when the
        frames already live on the model's device."""
        where = a.device if isinstance(a, Tensor) else torch.device("cpu")
        return list(self.interpolate_tensors(a, b, ts).to(where).unbind(0))

    def _v4(self, p0: Tensor, p1: Tensor, ts: list[float]) -> Tensor:
        t = torch.tensor(ts, device=self.device, dtype=self.dtype).view(-1, 1, 1, 1)
        return torch.cat([self.net(p0, p1, tc, self.scale) for tc in t.split(self.max_batch)])

    def _bisect(self, p0: Tensor, p1: Tensor, ts: list[float]) -> Tensor:
        """v3 HD: midpoints of midpoints, shared between timesteps; t not on the dyadic grid of depth
        `bisect_depth` is a linear blend of the two grid frames around it (1/16 apart by default)."""
        frames: dict[Fraction, Tensor] = {Fraction(0): p0, Fraction(1): p1}

        def at(lo: Fraction, hi: Fraction) -> Fraction:
            m = (lo + hi) / 2
            if m not in frames:
                frames[m] = self.net(frames[lo], frames[hi], self.scale)
            return m

        outs = []
        for t in ts:
            tf, lo, hi = Fraction(t), Fraction(0), Fraction(1)
            for _ in range(self.bisect_depth):
                m = at(lo, hi)
                if tf == m:
                    lo = hi = m
                    break
                lo, hi = (lo, m) if tf < m else (m, hi)
            if lo == hi:
                outs.append(frames[lo])
            else:
                w = float((tf - lo) / (hi - lo))
                outs.append(frames[lo] * (1 - w) + frames[hi] * w)
        return torch.cat(outs)
