"""Tiny randomly initialised FLUX.2 [klein], built offline with the real classes and saved as a diffusers folder.

Used by tests, CPU demos and benchmarks. The folder is what `Flux2KleinPipeline.from_pretrained` (or
`Flux2KleinKVPipeline` for `kv=True`) loads, and what the `flux2` loader loads: same code path as real weights.
Everything is deterministic from `TinySpec` (weights from `seed`, tokenizer from a fixed corpus).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# bump when the folder layout or the build recipe changes: old cached builds are then ignored
_RECIPE = 3

# Qwen3-style chat template; `enable_thinking=False` appends the empty think block like Qwen3's own template
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# a fixed corpus for the byte-level BPE: the merges only need to be plausible, not good
_CORPUS = [
    "a watercolor painting, soft pastel colors",
    "anime style illustration, clean line art, vivid colors",
    "cyberpunk city at night, neon lights, rain",
    "an oil painting in the style of the old masters",
    "turn the person into a marble statue in a museum",
    "make it look like a pencil sketch on paper with soft shading",
    "a portrait photo of a person in front of a webcam, natural light, sharp focus",
    "the quick brown fox jumps over the lazy dog while the camera keeps rolling",
    "replace the background with a sunny beach and palm trees, keep the face unchanged",
    "pixel art, sixteen colors, retro video game style",
]


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny FLUX.2 klein. Defaults: the test model (a few ms per transformer call)."""

    heads: int = 2
    head_dim: int = 16  # RoPE axes are head_dim/4 each (klein: 4 x 32 for 128)
    double_blocks: int = 1
    single_blocks: int = 2
    mlp_ratio: float = 3.0
    text_hidden: int = 32  # joint_attention_dim = 3 * text_hidden (hidden layers 9, 18, 27 stacked)
    text_layers: int = 28  # the pipelines read hidden_states[27]: at least 27 layers
    text_heads: int = 2
    text_intermediate: int = 64
    vocab_size: int = 400
    vae_channels: tuple[int, ...] = (8, 16, 16, 16)  # 4 levels -> 8x down-scale, as the real VAE
    vae_groups: int = 4
    vae_layers_per_block: int = 1
    kv: bool = False  # True: a klein-9B-KV-style folder (Flux2KleinKVPipeline)
    seed: int = 0

    def key(self) -> str:
        """Stable hash of the spec and build recipe: the cache folder name."""
        blob = json.dumps({"recipe": _RECIPE, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


TEST = TinySpec()
# the CPU demo / `bench engine` default: klein's head size (128) and real token counts (512x512: 1024 noise +
# 1024 reference + 512 text), hidden 256, 1 double + 2 single blocks: about a second a frame on 2 CPU cores
DEMO = TinySpec(heads=2, head_dim=128, double_blocks=1, single_blocks=2, text_hidden=64, text_intermediate=128,
                vae_channels=(8, 16, 32, 32), vae_groups=4)
# the design's "bench shape": hidden 1024 = 8 x 128, 2 double + 4 single blocks (~3.6 s per dense forward)
BENCH = replace(DEMO, heads=8, double_blocks=2, single_blocks=4, vae_channels=(16, 32, 32, 32), vae_groups=8)
PRESETS: dict[str, TinySpec] = {"test": TEST, "demo": DEMO, "bench": BENCH}
DEFAULT_PRESET = "demo"  # flux2-tiny without tiny_preset (and `model` not a preset name)


def default_cache_root() -> Path:
    return Path(os.environ.get("FLUXRT_TINY_CACHE", "~/.cache/fluxrt/tiny")).expanduser()


def build_tokenizer(spec: TinySpec):
    """Byte-level BPE trained in memory, wrapped in transformers' Qwen2 fast tokenizer, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=spec.vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2TokenizerFast(vocab=model["vocab"], merges=merges)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_transformer(spec: TinySpec, in_channels: int = 128):
    """The transformer of `spec` (fp32, eval mode), random weights from `spec.seed`.

    Seeds torch's global generator (`build_components` restores it); the VAE and text encoder of the
    folder continue from the same stream, so this is also what `bench cache` times.
    """
    import torch
    from diffusers import Flux2Transformer2DModel

    if spec.head_dim % 4:
        raise ValueError("head_dim must be a multiple of 4 (4 RoPE axes)")
    torch.manual_seed(spec.seed)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=in_channels, num_layers=spec.double_blocks, num_single_layers=spec.single_blocks,
        attention_head_dim=spec.head_dim, num_attention_heads=spec.heads,
        joint_attention_dim=3 * spec.text_hidden, timestep_guidance_channels=256, mlp_ratio=spec.mlp_ratio,
        axes_dims_rope=(spec.head_dim // 4,) * 4, rope_theta=2000, guidance_embeds=False,
    ).eval()


def build_components(spec: TinySpec) -> dict:
    """The five pipeline components, randomly initialised from `spec.seed` (CPU, fp32)."""
    import torch
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if spec.text_layers < 27:
        raise ValueError("text_layers must be >= 27: the pipelines stack hidden layers 9, 18 and 27")
    tokenizer = build_tokenizer(spec)
    gen_state = torch.random.get_rng_state()
    try:
        transformer = build_transformer(spec)
        n = len(spec.vae_channels)
        vae = AutoencoderKLFlux2(
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=spec.vae_channels, layers_per_block=spec.vae_layers_per_block,
            latent_channels=32, norm_num_groups=spec.vae_groups, sample_size=256,
        )
        # BatchNorm running stats away from (0, 1) so the normalisation is exercised by the tests
        vae.bn.running_mean.copy_(0.1 * torch.randn(vae.bn.num_features))
        vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.num_features))
        cfg = Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=spec.text_hidden, intermediate_size=spec.text_intermediate,
            num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads, num_key_value_heads=1,
            head_dim=spec.text_hidden // spec.text_heads, max_position_embeddings=1024, tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        )
        text_encoder = Qwen3ForCausalLM(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    # klein's scheduler settings (dynamic shifting with the pipeline's empirical mu)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential",
    )
    for m in (transformer, vae, text_encoder):
        m.eval()
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def save_tiny(spec: TinySpec, folder: Path) -> Path:
    """Build `spec` and save it as a diffusers folder at `folder` (created; must not exist or be empty)."""
    from diffusers import Flux2KleinKVPipeline, Flux2KleinPipeline

    cls = Flux2KleinKVPipeline if spec.kv else Flux2KleinPipeline
    kwargs = {"is_distilled": True} if not spec.kv else {}
    pipe = cls(**build_components(spec), **kwargs)
    pipe.save_pretrained(folder, safe_serialization=True)
    (Path(folder) / "fluxrt_tiny.json").write_text(json.dumps({"recipe": _RECIPE, **asdict(spec)}, indent=2))
    return Path(folder)


def ensure_tiny(spec: TinySpec = TEST, folder: Path | None = None, cache_root: Path | None = None,
                on_phase: Callable[[str], None] | None = None) -> Path:
    """The folder of `spec`: built once (atomically) under `cache_root/<hash>`, or at `folder` when given.
    `on_phase("building the tiny model")` is called when it has to be built (tens of seconds on a CPU)."""
    target = Path(folder).expanduser() if folder is not None else (cache_root or default_cache_root()) / spec.key()
    if (target / "model_index.json").is_file():
        return target
    if on_phase is not None:
        on_phase("building the tiny model")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save_tiny(spec, tmp)
        try:
            os.rename(tmp, target)  # atomic; fails when a concurrent builder got there first
        except OSError:
            if not (target / "model_index.json").is_file():  # not a concurrent builder that won: a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def preset(name: str, **changes) -> TinySpec:
    """A named spec (`test`, `demo`, `bench`) with optional field changes, e.g. preset('test', kv=True)."""
    if name not in PRESETS:
        from engine.errors import EngineConfigError

        raise EngineConfigError(f"unknown tiny model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **changes)


class CellTokens:
    """Reference tokens from pixels without a VAE, for the spatial-cache benchmark and tests: each 16x16x3 cell
    through a fixed random projection, so a change in a cell changes exactly that cell's token (the locality of
    VAE encode + 2x2 patchify, without its cost)."""

    def __init__(self, channels: int, seed: int = 0) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(16 * 16 * 3, channels, generator=g) / (16 * 16 * 3) ** 0.5

    def __call__(self, frame):  # uint8 (H, W, 3) numpy -> (1, H/16 * W/16, channels)
        import torch

        h, w = frame.shape[0] // 16, frame.shape[1] // 16
        x = torch.from_numpy(frame).float().div(127.5).sub(1.0)
        cells = x.reshape(h, 16, w, 16, 3).permute(0, 2, 1, 3, 4).reshape(h * w, -1)
        return (cells @ self.proj)[None]
