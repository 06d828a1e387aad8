"""Latent layout of FLUX.2 and the one-time preparation of a (shape, steps, seed).

Image (B, 3, H, W) -> VAE latents (B, 32, H/8, W/8) -> 2x2 patchify (B, 128, H/16, W/16) -> BatchNorm
normalise -> pack (B, N = H/16 * W/16, 128) tokens, row-major, with position ids (T, h, w, 0): T = 0 for the
noise, 10 for the webcam reference, 20 for a style reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.taef2 import patchify, unpatchify

NOISE_T, REFERENCE_T = 0, 10  # the i-th reference image has T = 10 + 10 * i


def pack(z: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, h*w, C)
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).permute(0, 2, 1)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:  # (B, h*w, C) -> (B, C, h, w)
    b, n, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


def grid_ids(h: int, w: int, t: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h*w, 4) int64 position ids (t, row, col, 0), row-major like `pack`."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ids = torch.stack([torch.full_like(rows, t), rows, cols, torch.zeros_like(rows)], dim=-1)
    return ids.reshape(h * w, 4).to(device)


def image_ids(h: int, w: int, refs: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """Position ids of the noise grid followed by `refs` reference grids (T = 10, 20, ...), as klein orders them."""
    return torch.cat([grid_ids(h, w, NOISE_T, device)] + [grid_ids(h, w, REFERENCE_T * (i + 1), device) for i in range(refs)])


class FullVAE:
    """AutoencoderKLFlux2 in the serving path: deterministic encode (distribution mode) and BatchNorm (de)normalise."""

    def __init__(self, vae):
        self.vae = vae
        self.encoder, self.decoder = vae.encoder, vae.decoder  # compile targets

    @property
    def mean(self) -> torch.Tensor:  # (1, 128, 1, 1); read each time: the buffers move with the VAE
        return self.vae.bn.running_mean.view(1, -1, 1, 1)

    @property
    def std(self) -> torch.Tensor:  # (1, 128, 1, 1)
        return torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [-1, 1] -> (B, 128, H/16, W/16) normalised
        z = self.vae.encode(x).latent_dist.mode()  # (B, 32, H/8, W/8)
        z = patchify(z)
        return (z - self.mean.to(z.dtype)) / self.std.to(z.dtype)

    def raw_latents(self, z: torch.Tensor) -> torch.Tensor:  # normalised (B, 128, h, w) -> (B, 32, 2h, 2w)
        return unpatchify(z * self.std.to(z.dtype) + self.mean.to(z.dtype))

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # normalised (B, 128, h, w) -> (B, 3, 16h, 16w) [-1, 1]
        return self.vae.decode(self.raw_latents(z), return_dict=False)[0]


class TinyVAE:
    """TAEF2 in place of the full VAE: its latents are already the normalised ones (BatchNorm = identity)."""

    def __init__(self, taef2):
        self.taef2 = taef2
        self.encoder, self.decoder = taef2.encoder, taef2.decoder

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.taef2.encode(x)

    def raw_latents(self, z: torch.Tensor) -> torch.Tensor:
        return unpatchify(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.taef2.decode(z)


@dataclass
class FramePlan:
    """Everything fixed for a (resolution, steps, seed): computed once, reused by every frame."""

    height: int
    width: int
    steps: int
    seed: int
    h: int  # token grid rows, height / 16
    w: int  # token grid cols, width / 16
    noise: torch.Tensor  # (1, N, 128) initial latents, identical for every frame with this seed
    img_ids: torch.Tensor  # (N, 4) noise-token position ids (T = 0)
    ref_ids: torch.Tensor  # (N, 4) webcam-reference position ids (T = 10)
    timesteps: torch.Tensor  # (steps,) transformer timestep input (scheduler timestep / 1000, model dtype)
    dts: torch.Tensor  # (steps,) float32 sigma[i+1] - sigma[i], the Euler step sizes


def make_plan(scheduler, *, height: int, width: int, steps: int, seed: int, device: torch.device,
              dtype: torch.dtype) -> FramePlan:
    """Noise, ids and the sigma schedule exactly as Flux2KleinPipeline makes them (CPU generator from `seed`)."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    h, w = height // 16, width // 16
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn((1, 128, h, w), generator=gen, dtype=dtype).to(device)  # randn_tensor with a CPU generator
    sigmas = np.linspace(1.0, 1 / steps, steps)
    mu = compute_empirical_mu(image_seq_len=h * w, num_steps=steps)
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
    sig = scheduler.sigmas.to(device=device, dtype=torch.float32)
    return FramePlan(
        height=height, width=width, steps=steps, seed=seed, h=h, w=w, noise=pack(noise),
        img_ids=grid_ids(h, w, NOISE_T, device), ref_ids=grid_ids(h, w, REFERENCE_T, device),
        timesteps=scheduler.timesteps.to(device).to(dtype) / 1000, dts=sig[1:] - sig[:-1],
    )
