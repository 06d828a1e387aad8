"""TAEF2: the tiny autoencoder for FLUX.2 latents (TAESD layout, GroupNorm "pool" branch in the middle blocks).

Images are in [0, 1]; latents are FLUX.2's 32-channel latents at 8x down-scale, unpatchified. Patchified 2x2
(-> 128 channels) they are the *normalised* tokens the transformer sees, so in the FLUX.2 path TAEF2 replaces
VAE + BatchNorm: `encode` takes [-1, 1] images to normalised patchified latents and `decode` goes back.

Layout (derived from the checkpoint's keys, `nn.Sequential` indices):
  encoder: conv(3,64) Block | conv s2, Block x3 | conv s2, Block x3 | conv s2, Block+pool x3 | conv(64,32)
  decoder: tanh clamp, conv(32,64), ReLU | Block+pool x3, up2, conv | Block x3, up2, conv | Block x3, up2, conv
           | Block, conv(64,3)
  Block(x) = relu(conv3(relu(conv2(relu(conv1(x'))))) + x'), with x' = x + pool(x) where the block has one;
  pool = conv1x1(64->256) -> GroupNorm(4 groups) -> ReLU -> conv1x1(256->64): per-image statistics give the
  middle blocks global context.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import EngineConfigError
from engine.options import DEFAULT_MODELS_DIR

ENCODER_FILE, DECODER_FILE = "taef2_encoder.pth", "taef2_decoder.pth"


@dataclass(frozen=True)
class TAEF2Config:
    width: int = 64
    latent_channels: int = 32
    pool_width: int = 256  # 4 x width
    pool_groups: int = 4


def _conv(n_in: int, n_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, stride=stride, padding=1, bias=bias)


class Block(nn.Module):
    def __init__(self, c: int, cfg: TAEF2Config, pool: bool = False):
        super().__init__()
        self.conv = nn.Sequential(_conv(c, c), nn.ReLU(), _conv(c, c), nn.ReLU(), _conv(c, c))
        self.pool = nn.Sequential(
            nn.Conv2d(c, cfg.pool_width, 1, bias=False), nn.GroupNorm(cfg.pool_groups, cfg.pool_width), nn.ReLU(),
            nn.Conv2d(cfg.pool_width, c, 1, bias=False),
        ) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # soft clamp of latents to (-3, 3)
        return torch.tanh(x / 3) * 3


def encoder(cfg: TAEF2Config = TAEF2Config()) -> nn.Sequential:
    c = cfg.width
    return nn.Sequential(
        _conv(3, c), Block(c, cfg),
        _conv(c, c, 2, bias=False), Block(c, cfg), Block(c, cfg), Block(c, cfg),
        _conv(c, c, 2, bias=False), Block(c, cfg), Block(c, cfg), Block(c, cfg),
        _conv(c, c, 2, bias=False), Block(c, cfg, True), Block(c, cfg, True), Block(c, cfg, True),
        _conv(c, cfg.latent_channels),
    )


def decoder(cfg: TAEF2Config = TAEF2Config()) -> nn.Sequential:
    c = cfg.width
    return nn.Sequential(
        Clamp(), _conv(cfg.latent_channels, c), nn.ReLU(),
        Block(c, cfg, True), Block(c, cfg, True), Block(c, cfg, True), nn.Upsample(scale_factor=2),
        _conv(c, c, bias=False),
        Block(c, cfg), Block(c, cfg), Block(c, cfg), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        Block(c, cfg), Block(c, cfg), Block(c, cfg), nn.Upsample(scale_factor=2), _conv(c, c, bias=False),
        Block(c, cfg), _conv(c, 3),
    )


def patchify(z: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 4C, H/2, W/2), FLUX.2's channel order
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(z: torch.Tensor) -> torch.Tensor:  # (B, 4C, h, w) -> (B, C, 2h, 2w)
    b, c4, h, w = z.shape
    return z.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)


class TAEF2(nn.Module):
    """Encoder + decoder. `encode_image`/`decode_latents` speak [0, 1] images and raw 32-channel latents."""

    def __init__(self, cfg: TAEF2Config = TAEF2Config()):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = encoder(cfg), decoder(cfg)

    @classmethod
    def from_files(cls, path: str | Path | None = None, models_dir: str | Path | None = None) -> "TAEF2":
        """Load from a folder holding taef2_{encoder,decoder}.pth (or a file in it); see `find_weights`."""
        folder = find_weights(path, models_dir)
        model = cls()
        for part, name in ((model.encoder, ENCODER_FILE), (model.decoder, DECODER_FILE)):
            try:
                state = torch.load(folder / name, map_location="cpu", weights_only=True)
            except Exception as e:  # truncated zip, bad pickle, objects refused by weights_only, unreadable file
                raise EngineConfigError(f"{folder / name} is not a readable torch checkpoint ({type(e).__name__}: "
                                        f"{str(e)[:200]}); re-download it with `fluxrt-cam models download taef2`"
                                        ) from None
            try:
                part.load_state_dict(state, strict=True)
            except (RuntimeError, TypeError) as e:  # wrong keys / shapes, or not a dict at all
                raise EngineConfigError(f"{folder / name} is not a TAEF2 checkpoint ({e}); "
                                        "re-download it with `fluxrt-cam models download taef2`") from None
        return model.eval().requires_grad_(False)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, 32, H/8, W/8)
        return self.encoder(x)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:  # (B, 32, h, w) -> (B, 3, 8h, 8w) ~[0, 1]
        return self.decoder(z)

    # FLUX.2 path: [-1, 1] images <-> normalised patchified latents (the BatchNorm step is the identity)
    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1, 1] -> (B, 128, H/16, W/16)
        return patchify(self.encoder(x * 0.5 + 0.5))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # (B, 128, h, w) -> (B, 3, 16h, 16w) in ~[-1, 1]
        return self.decoder(unpatchify(z)) * 2 - 1


def find_weights(path: str | Path | None = None, models_dir: str | Path | None = None) -> Path:
    """The folder with both TAEF2 files: `path` (folder or a file in it) when given, else $FLUXRT_TAEF2,
    <models_dir>/taef2 (where `fluxrt-cam models download taef2` puts them), DEFAULT_MODELS_DIR/taef2."""
    candidates: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        candidates.append(p.parent if p.is_file() else p)
    else:
        if os.environ.get("FLUXRT_TAEF2"):
            candidates.append(Path(os.environ["FLUXRT_TAEF2"]).expanduser())
        if models_dir is not None:
            candidates.append(Path(models_dir).expanduser() / "taef2")
        candidates.append((DEFAULT_MODELS_DIR / "taef2").expanduser())
    for c in candidates:
        if (c / ENCODER_FILE).is_file() and (c / DECODER_FILE).is_file():
            return c
    where = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise EngineConfigError(f"TAEF2 weights ({ENCODER_FILE}, {DECODER_FILE}) not found in {where}; "
                            "get them with `fluxrt-cam models download taef2` or set taef2_path")
