"""The FLUX.2 [klein] serving loop: one webcam frame in, one edited frame out.

Per frame: uint8 frame -> tensor (pinned + non-blocking on CUDA) -> deterministic VAE encode -> reference
tokens; cached prompt embeddings; the denoise loop over a plan (noise, ids, step sizes) prepared once per
(shape, steps, seed); decode -> uint8. Numerically the same as `Flux2KleinPipeline` (and
`Flux2KleinKVPipeline` for klein 9B-KV) on the same inputs; tests hold it to that.

Every transformer call goes through `Flux2Engine._velocity`, which gets all the transformer needs as
arguments (the 9B-KV reference K/V too: a local of the denoise loop); everything fixed per (shape, steps,
seed) is in `FramePlan` (`_plan`). With the spatial cache on, `_denoise` hands the cache the frame, its
`CacheKey` and token layout before the first step and `_velocity` calls the cache instead of the
transformer. `edit` returns an `EditResult`: the frame stays on the device, with the cache's mask.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.base import EditResult, Engine, EngineStats, check_rgb_frame
from engine.errors import EngineConfigError
from engine.image import cover_resize
from engine.flux2 import attention, loader
from engine.flux2.latents import REFERENCE_T, FramePlan, FullVAE, TinyVAE, grid_ids, make_plan, pack, unpack
from engine.flux2.text import PromptCache
from engine.options import CacheOptions, EngineOptions, ModelOptions

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """A validated `device` option (ModelOptions) on this machine."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineConfigError(f"device {device!r} asked for but CUDA is not available; use device = 'auto' or 'cpu'")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """A validated `dtype` option (ModelOptions) on `device`."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


class _StageClock:
    """Stage boundaries: CUDA events on a GPU (read after the frame's one sync), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            with torch.cuda.device(self.device):  # cuda:N: record on that device's stream, not device 0's
                e = torch.cuda.Event(enable_timing=True)
                e.record(torch.cuda.current_stream(self.device))
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self) -> list[float]:  # call after the host has synchronised with the device
        m = self.marks
        if self.cuda:
            return [a.elapsed_time(b) for a, b in zip(m, m[1:])]
        return [(b - a) * 1000.0 for a, b in zip(m, m[1:])]


class Flux2Engine(Engine):
    """Edits frames with FLUX.2 [klein]; construct with `create_flux2_engine` (validated options)."""

    name = "flux2"

    def __init__(self, components: loader.Flux2Components, *, width: int, height: int, steps: int, seed: int,
                 device: torch.device, dtype: torch.dtype, vae: str, taef2_path: Path | None, models_dir: Path,
                 attention_backend: str, compile: bool, text_encoder_offload: bool,
                 style_reference: Path | np.ndarray | None, cache: CacheOptions):
        # EngineOptions fields, validated once by create_flux2_engine (defaults there too); not checked again here
        super().__init__()
        self.width, self.height, self.steps, self.seed = width, height, steps, seed
        self.device, self.dtype = device, dtype
        self.components = components
        self.kv = components.kv
        self.transformer = _to(components.transformer, device, dtype)
        self.scheduler = components.scheduler
        # spatial cache (engine.spatial_cache): recompute only the tokens of the cells that changed
        from engine.spatial_cache import SpatialCache

        settings = self.cache_settings = cache
        self._compile = compile
        self.spatial_cache = (SpatialCache(self.transformer, settings, kv_reference=self.kv, compile=compile)
                              if settings.enabled else None)
        self.text = PromptCache(_to(components.text_encoder, None, dtype), components.tokenizer, device=device,
                                dtype=dtype, offload=text_encoder_offload)
        if not text_encoder_offload:
            components.text_encoder.to(device)
        if vae == "taef2":
            from engine.taef2 import TAEF2

            self.vae = TinyVAE(TAEF2.from_files(taef2_path, models_dir).to(device=device, dtype=dtype))
        else:  # "full" (EngineOptions allows no other)
            self.vae = FullVAE(_to(components.vae, device, dtype))
        if self.kv:  # klein 9B-KV: processors that extract / inject the reference K/V
            from diffusers.models.transformers.transformer_flux2 import (Flux2KVAttnProcessor,
                                                                         Flux2KVParallelSelfAttnProcessor)

            for block in self.transformer.transformer_blocks:
                block.attn.set_processor(Flux2KVAttnProcessor())
            for block in self.transformer.single_transformer_blocks:
                block.attn.set_processor(Flux2KVParallelSelfAttnProcessor())
        backend, failures = attention.choose(attention_backend, device, dtype)
        if backend != "native":
            self.transformer.set_attention_backend(backend)
        self.info: dict[str, Any] = {
            "model": str(components.path), "kv": self.kv, "device": str(device), "dtype": str(dtype).split(".")[-1],
            "vae": vae, "attention_backend": backend, "attention_failures": failures, "compile": {},
        }
        if compile:
            from engine.flux2.compile import compile_flux2

            self.info["compile"] = compile_flux2(self.transformer, self.vae)
        self._plans: OrderedDict[tuple[int, int], FramePlan] = OrderedDict()
        self._pinned_in = None
        self._upload_done = None  # CUDA event after the last upload from _pinned_in (see _to_device)
        self._style = self._load_style(style_reference) if style_reference is not None else None
        self._style_version = 0
        self._style_key = None if style_reference is None or isinstance(style_reference, np.ndarray) else str(
            Path(style_reference).expanduser())
        log.info("FLUX.2 engine ready: %s", self.info)

    # ---- live changes between frames (the daemon's control API) --------------------------------------------
    def configure_cache(self, options: CacheOptions | dict | bool | None) -> None:
        """New spatial-cache settings (CacheOptions, a dict of its fields, or True / False). A change starts a
        fresh cache, so the next frame recomputes everything with the new tau / halo / refresh period / rho."""
        from engine.spatial_cache import SpatialCache

        settings = CacheOptions.parse(options)  # taken as is when already a CacheOptions; else EngineConfigError naming the key
        if settings == self.cache_settings:
            return
        self.cache_settings = settings
        self.spatial_cache = None  # free the old buffers first
        if settings.enabled:
            self.spatial_cache = SpatialCache(self.transformer, settings, kv_reference=self.kv, compile=self._compile)

    def set_style_reference(self, ref: Path | str | None) -> None:
        """Use another style reference image (or none); encoded once here, not per frame."""
        key = None if ref is None else str(Path(ref).expanduser())
        if key == self._style_key:
            return
        self._style = None if key is None else self._load_style(Path(key))
        self._style_key = key
        self._style_version += 1  # a new key for the spatial cache: ids of freed tensors get reused

    # ---- one-time preparation -------------------------------------------------------------------------------
    def _plan(self, steps: int, seed: int) -> FramePlan:
        """Noise, ids and step sizes for (steps, seed) at the engine resolution: made once, then reused."""
        key = (steps, seed)
        plan = self._plans.get(key)
        if plan is None:
            plan = make_plan(self.scheduler, height=self.height, width=self.width, steps=steps, seed=seed,
                             device=self.device, dtype=self.dtype)
            self._plans[key] = plan
            if len(self._plans) > 4:
                self._plans.popitem(last=False)
        return plan

    def _load_style(self, ref: Path | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Second in-context reference (T = 20): encoded once, reused by every frame. Returns its tokens and the
        position ids of [webcam reference, style reference]."""
        if isinstance(ref, np.ndarray):
            img = ref
        else:
            import cv2

            path = Path(ref).expanduser()
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise EngineConfigError(f"style_reference {path} is not a readable image; give a PNG or JPEG file")
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if img.shape[:2] != (self.height, self.width):
            img = cover_resize(img, self.width, self.height)
        with torch.no_grad():
            tokens = self._reference_tokens(np.ascontiguousarray(img), staging=False)
        h, w = self.height // 16, self.width // 16  # ids of [webcam, style]: the same for every frame and plan
        ids = torch.cat([grid_ids(h, w, REFERENCE_T, self.device), grid_ids(h, w, 2 * REFERENCE_T, self.device)])
        return tokens, ids

    # ---- per frame ------------------------------------------------------------------------------------------
    def _to_device(self, frame: np.ndarray, staging: bool = True) -> torch.Tensor:
        """uint8 (H, W, 3) -> (1, 3, H, W) in [-1, 1], model dtype; pinned + non-blocking copy on CUDA."""
        src = torch.from_numpy(frame)
        staged = self.device.type == "cuda" and staging
        if staged:
            if self._pinned_in is None or self._pinned_in.shape != src.shape:
                self._pinned_in = torch.empty(src.shape, dtype=torch.uint8, pin_memory=True)
            elif self._upload_done is not None:
                # the previous frame's non-blocking upload may still read the buffer (denoise() alone never
                # syncs): wait for that copy only, not for the whole previous frame. A buffer replaced above is
                # safe to drop: the pinned allocator keeps it until the copies that use it have finished.
                self._upload_done.synchronize()
            self._pinned_in.copy_(src)
            src = self._pinned_in
        x = src.to(self.device, non_blocking=True)
        if staged:
            if self._upload_done is None:  # one event, re-recorded: synchronize() waits for its latest record
                self._upload_done = torch.cuda.Event()
            self._upload_done.record(torch.cuda.current_stream(self.device))
        x = x.permute(2, 0, 1).unsqueeze(0)
        x = x.to(torch.float32) / 255.0  # the pipeline's preprocessing, in float32
        return (2.0 * x - 1.0).to(self.dtype)

    def _reference_tokens(self, frame: np.ndarray, staging: bool = True) -> torch.Tensor:  # -> (1, N, 128)
        return pack(self.vae.encode(self._to_device(frame, staging)))

    def check_frame(self, frame: np.ndarray) -> None:
        check_rgb_frame(frame)
        if frame.shape[:2] != (self.height, self.width):
            raise EngineConfigError(
                f"frame is {frame.shape[1]}x{frame.shape[0]} but the engine runs at {self.width}x{self.height}; "
                "resize frames to the engine's width x height first (the daemon does) or rebuild the engine")

    @torch.no_grad()
    def edit(self, frame: np.ndarray, *, prompt: str, seed: int | None = None,
             steps: int | None = None) -> EditResult:
        self.check_frame(frame)
        clock = _StageClock(self.device)
        clock.mark()
        tokens, mask = self._denoise(frame, prompt=prompt, seed=seed, steps=steps, clock=clock)
        image = self.vae.decode(self._unpack(tokens))  # (1, 3, H, W) in [-1, 1]
        u8 = ((image.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0)
        clock.mark()
        if self.device.type == "cuda":
            # wait for the decode, for the stage times (the frame itself stays on the device). It keeps the host
            # from queuing the interpolator's work behind the decode: the cost of per-stage timing
            clock.marks[-1].synchronize()
        prepare, denoise, decode = clock.intervals_ms()
        self.stats = EngineStats(stages_ms={"prepare": prepare, "denoise": denoise, "decode": decode},
                                 cache=dict(self.spatial_cache.stats) if self.spatial_cache else {})
        return EditResult(u8.contiguous(), mask, self.stats)

    def denoise(self, frame: np.ndarray, *, prompt: str, seed: int | None = None, steps: int | None = None,
                clock: _StageClock | None = None) -> torch.Tensor:
        """Prepare + denoise one frame; returns the final packed latent tokens (1, N, 128), normalised."""
        self.check_frame(frame)
        return self._denoise(frame, prompt=prompt, seed=seed, steps=steps, clock=clock)[0]

    def _denoise(self, frame: np.ndarray, *, prompt: str, seed: int | None, steps: int | None,
                 clock: _StageClock | None) -> tuple[torch.Tensor, np.ndarray | None]:
        """`denoise` for a frame already checked; also returns the spatial cache's mask (None without one)."""
        steps = self.steps if steps is None else steps
        seed = self.seed if seed is None else seed
        ModelOptions.check("steps", steps)  # a per-frame override, validated as the option is
        plan = self._plan(steps, seed)
        txt, txt_ids = self.text.get(prompt)
        ref = self._reference_tokens(frame)  # (1, N, 128)
        self.progress()  # text and VAE encode done
        ref_ids = plan.ref_ids
        if self._style is not None:
            ref = torch.cat([ref, self._style[0]], dim=1)
            ref_ids = self._style[1]
        if clock is not None:
            clock.mark()
        mask = self._begin_cached_frame(frame, prompt, seed, steps, plan, ref, txt, txt_ids, ref_ids)
        x, kv = plan.noise, None  # kv: 9B-KV reference K/V, extracted at step 0 and reused by the later steps
        for i in range(steps):
            v, kv = self._velocity(i, x, ref, txt, plan.img_ids, ref_ids, txt_ids, plan.timesteps[i:i + 1], kv)
            x = (x.to(torch.float32) + plan.dts[i] * v).to(v.dtype)  # Euler step, as the scheduler computes it
            self.progress()
        if self.spatial_cache is not None:
            self.spatial_cache.end_frame()
        if clock is not None:
            clock.mark()
        return x, mask

    def _begin_cached_frame(self, frame: np.ndarray, prompt: str, seed: int, steps: int, plan: FramePlan,
                            ref: torch.Tensor, txt: torch.Tensor, txt_ids: torch.Tensor,
                            ref_ids: torch.Tensor) -> np.ndarray | None:
        """Tell the spatial cache (if any) this frame, its key and token layout; returns the cells it will
        recompute. Everything the cache needs is an argument: no state is left on the engine."""
        sc = self.spatial_cache
        if sc is None:
            return None
        from engine.spatial_cache import CacheKey, TokenLayout

        n = plan.noise.shape[1]
        layout = TokenLayout(text=txt.shape[1], grid_h=self.height // 16, grid_w=self.width // 16, grid_refs=1,
                             extra=ref.shape[1] - n)
        style = None if self._style is None else f"style#{self._style_version}"
        key = CacheKey(prompt, seed, steps, self.width, self.height, style)
        return sc.begin_frame(frame, key, layout=layout, timesteps=plan.timesteps, txt_ids=txt_ids,
                              img_ids=torch.cat([plan.img_ids, ref_ids], dim=0))

    def _velocity(self, step: int, x: torch.Tensor, ref: torch.Tensor | None, txt: torch.Tensor,
                  img_ids: torch.Tensor, ref_ids: torch.Tensor | None, txt_ids: torch.Tensor,
                  timestep: torch.Tensor, kv: Any = None) -> tuple[torch.Tensor, Any]:
        """Model velocity for the noise tokens at step `step`, and the 9B-KV reference K/V for the next step.

        x (1, N, 128) noise tokens; ref (1, M, 128) reference tokens (webcam [+ style]); txt (1, L, D) prompt
        embeddings; img_ids (N, 4), ref_ids (M, 4), txt_ids (L, 4) position ids; timestep (1,) = t / 1000;
        kv: what the previous step returned (None at step 0). Returns ((1, N, 128), kv).
        """
        if self.spatial_cache is not None and ref is not None:  # the cache knows the frame (_begin_cached_frame)
            return self.spatial_cache.step(step, torch.cat([x, ref], dim=1), txt), None
        tr, n = self.transformer, x.shape[1]
        common = dict(encoder_hidden_states=txt, timestep=timestep, txt_ids=txt_ids, guidance=None, return_dict=False)
        if ref is None:
            return tr(hidden_states=x, img_ids=img_ids, **common)[0], None
        if not self.kv:  # klein 4B / 9B: [noise, reference] every step, output sliced to the noise tokens
            out = tr(hidden_states=torch.cat([x, ref], dim=1), img_ids=torch.cat([img_ids, ref_ids], dim=0),
                     **common)[0]
            return out[:, :n], None
        if step == 0 or kv is None:  # 9B-KV: [reference, noise], reference K/V extracted
            out, kv = tr(hidden_states=torch.cat([ref, x], dim=1), img_ids=torch.cat([ref_ids, img_ids], dim=0),
                         kv_cache_mode="extract", num_ref_tokens=ref.shape[1], **common)
            return out, kv
        return tr(hidden_states=x, img_ids=img_ids, kv_cache=kv, kv_cache_mode="cached", **common)[0], kv

    def _unpack(self, tokens: torch.Tensor) -> torch.Tensor:  # (1, N, 128) -> (1, 128, H/16, W/16)
        return unpack(tokens, self.height // 16, self.width // 16)

    def raw_latents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final tokens -> (1, 32, H/8, W/8) VAE latents: what the pipeline returns for output_type='latent'."""
        return self.vae.raw_latents(self._unpack(tokens))

    def close(self) -> None:
        self._plans.clear()
        self.text.clear()
        self._style = None
        for name in ("transformer", "vae", "text", "components", "spatial_cache"):
            setattr(self, name, None)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _to(module: torch.nn.Module, device: torch.device | None, dtype: torch.dtype) -> torch.nn.Module:
    """Move; cast only when the dtype differs (the loader already loads in the serving dtype)."""
    if next(module.parameters()).dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device) if device is not None else module


def create_flux2_engine(options: EngineOptions | dict | None = None, /, *, tiny: bool = False,
                        tiny_preset: str | None = None, tiny_dir: Path | None = None,
                        on_phase: Callable[[str], None] | None = None, **changes: Any) -> Flux2Engine:
    """Build `flux2` (a model folder / hub id) or `flux2-tiny` (built once offline, loaded the same way).

    `options`: an EngineOptions (used as it is), or a dict of its fields; keyword arguments are its fields
    too. Validated once, here (EngineConfigError naming each bad key). flux2-tiny also takes tiny_preset
    ("test" | "demo" | "bench", default "demo"; a preset name given as `model` selects it too) and tiny_dir
    (build into / load from that folder instead of ~/.cache/fluxrt/tiny). `on_phase(text)` hears which slow
    stage starts ("building the tiny model", "loading weights", "setting up on <device>"), for a progress display.
    """
    say = on_phase or (lambda _text: None)
    if not tiny and (tiny_preset is not None or tiny_dir is not None):
        raise EngineConfigError("tiny_preset and tiny_dir are flux2-tiny options; use the flux2-tiny engine or "
                                "remove them")
    o = EngineOptions.parse(options, **changes)
    device = resolve_device(o.device)
    dtype = resolve_dtype(o.dtype, device)
    attention.check_name(o.attention_backend)  # before any weights load
    models_dir: Path | None = o.models_dir.expanduser()
    model = o.model
    if tiny:
        from engine.flux2 import tiny as tiny_mod

        name = tiny_preset or (model if model in tiny_mod.PRESETS else tiny_mod.DEFAULT_PRESET)
        folder = tiny_mod.ensure_tiny(tiny_mod.preset(name), folder=tiny_dir, on_phase=on_phase)
        model, models_dir = str(folder), None
    say("loading weights")
    components = loader.load(model, models_dir, dtype=dtype)
    say(f"setting up on {device}")  # moves the weights, probes attention backends, wraps for torch.compile
    engine = Flux2Engine(
        components, width=o.width, height=o.height, steps=o.steps, seed=o.seed, device=device, dtype=dtype,
        vae=o.vae, taef2_path=o.taef2_path, models_dir=o.models_dir.expanduser(),
        attention_backend=o.attention_backend, compile=o.compile, text_encoder_offload=o.text_encoder_offload,
        style_reference=o.style_reference, cache=o.cache,
    )
    engine.name = "flux2-tiny" if tiny else "flux2"
    return engine
