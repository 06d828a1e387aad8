"""Prompt-embedding cache: the Qwen3 text encoder runs once per distinct prompt, not once per frame.

Encoding follows Flux2KleinPipeline: chat template (enable_thinking=False), padded to 512 tokens, hidden
layers (9, 18, 27) stacked along the channel axis -> (1, 512, 3 * hidden).
"""
from __future__ import annotations

from collections import OrderedDict

import torch

HIDDEN_LAYERS = (9, 18, 27)
MAX_TOKENS = 512


def text_ids(length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(L, 4) position ids of text tokens: (t=0, h=0, w=0, l=i)."""
    ids = torch.zeros(length, 4, dtype=torch.int64)
    ids[:, 3] = torch.arange(length)
    return ids.to(device)


class PromptCache:
    """prompt -> (embeds (1, L, D) in `dtype` on `device`, txt_ids (L, 4)); the `capacity` newest prompts kept."""

    def __init__(self, text_encoder, tokenizer, *, device: torch.device, dtype: torch.dtype, offload: bool = False,
                 capacity: int = 8, layers: tuple[int, ...] = HIDDEN_LAYERS, max_tokens: int = MAX_TOKENS):
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.device, self.dtype, self.offload = torch.device(device), dtype, offload
        self.capacity, self.layers, self.max_tokens = capacity, layers, max_tokens
        self.encoder_calls = 0  # text-encoder forwards run (tests assert that repeated prompts add none)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._ids = text_ids(max_tokens, self.device)
        if offload:
            self.text_encoder.to("cpu")

    def get(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        hit = self._cache.get(prompt)
        if hit is not None:
            self._cache.move_to_end(prompt)
            return hit
        value = (self._encode(prompt), self._ids)
        self._cache[prompt] = value
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return value

    @torch.no_grad()
    def _encode(self, prompt: str) -> torch.Tensor:
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True, enable_thinking=False)
        enc = self.tokenizer(text, return_tensors="pt", padding="max_length", truncation=True,
                             max_length=self.max_tokens)
        if self.offload:
            self.text_encoder.to(self.device)
        try:
            dev = next(self.text_encoder.parameters()).device
            out = self.text_encoder(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev),
                                    output_hidden_states=True, use_cache=False)
            self.encoder_calls += 1
            h = torch.stack([out.hidden_states[k] for k in self.layers], dim=1)  # (1, 3, L, hidden)
            h = h.to(device=self.device, dtype=self.dtype)
        finally:
            if self.offload:
                self.text_encoder.to("cpu")
        b, n, length, hidden = h.shape
        return h.permute(0, 2, 1, 3).reshape(b, length, n * hidden)  # (1, L, 3 * hidden)

    def clear(self) -> None:
        self._cache.clear()
