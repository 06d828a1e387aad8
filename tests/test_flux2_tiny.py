"""The tiny offline FLUX.2 klein: real classes, a diffusers folder, deterministic, cached by spec hash."""
from __future__ import annotations

import json

import pytest
import torch

from engine.errors import EngineConfigError
from engine.flux2 import loader
from engine.flux2.tiny import CHAT_TEMPLATE, TEST, TinySpec, build_tokenizer, ensure_tiny, preset

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("torch_one_thread")]


def test_folder_is_a_diffusers_klein_folder(tiny_flux2_dir):
    index = json.loads((tiny_flux2_dir / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline"
    assert index["transformer"] == ["diffusers", "Flux2Transformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKLFlux2"]
    assert index["text_encoder"] == ["transformers", "Qwen3ForCausalLM"]
    assert loader.missing_parts(tiny_flux2_dir) == ([], False)
    comps = loader.load(tiny_flux2_dir)
    t = comps.transformer.config
    assert (t.num_layers, t.num_single_layers, t.num_attention_heads, t.attention_head_dim) == (1, 2, 2, 16)
    assert t.joint_attention_dim == 3 * TEST.text_hidden and not t.guidance_embeds
    assert comps.vae.config.latent_channels == 32 and comps.text_encoder.config.num_hidden_layers == 28


def test_tokenizer_chat_template_and_padding(tiny_flux2_dir):
    from transformers import Qwen2TokenizerFast

    tok = Qwen2TokenizerFast.from_pretrained(tiny_flux2_dir / "tokenizer")
    text = tok.apply_chat_template([{"role": "user", "content": "a cat"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=False)
    assert text == "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    enc = tok(text, padding="max_length", max_length=512, truncation=True)
    assert len(enc["input_ids"]) == 512 and sum(enc["attention_mask"]) < 40
    assert tok.decode(tok(" watercolor painting")["input_ids"]) == " watercolor painting"  # byte-level round trip
    assert tok.chat_template == CHAT_TEMPLATE


def test_deterministic_from_spec(tmp_path):
    a = build_tokenizer(TEST)
    b = build_tokenizer(TEST)
    assert a.get_vocab() == b.get_vocab()
    from engine.flux2.tiny import build_components

    c1, c2 = build_components(TEST), build_components(TEST)
    for name in ("transformer", "vae", "text_encoder"):
        s1, s2 = c1[name].state_dict(), c2[name].state_dict()
        assert all(torch.equal(s1[k], s2[k]) for k in s1)
    c3 = build_components(preset("test", seed=1))
    assert not torch.equal(c3["transformer"].x_embedder.weight, c1["transformer"].x_embedder.weight)
    # the global RNG is left alone
    torch.manual_seed(5)
    x = torch.rand(1)
    torch.manual_seed(5)
    build_tokenizer(TEST)
    build_components(TEST)
    assert torch.equal(torch.rand(1), x)


def test_cache_key_and_reuse(tmp_path):
    assert TEST.key() == TinySpec().key() and TEST.key() != preset("test", kv=True).key()
    folder = ensure_tiny(TEST, cache_root=tmp_path)
    assert folder == tmp_path / TEST.key()
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny(TEST, cache_root=tmp_path) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_kv_variant_folder(tmp_path):
    folder = ensure_tiny(preset("test", kv=True), folder=tmp_path / "kv")
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "Flux2KleinKVPipeline"
    assert loader.missing_parts(folder) == ([], True)


def test_unknown_preset():
    with pytest.raises(EngineConfigError, match="test, demo, bench"):
        preset("huge")
