"""Attention backend probing; torch.compile per block (diffusers' regional compile) and per module, each with
its own eager fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.flux2 import attention
from engine.flux2 import compile as compile_mod
from engine.flux2.compile import compile_modules, uncompile

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("torch_one_thread")]


def test_auto_on_cpu_picks_a_verified_backend():
    name, failures = attention.choose("auto", torch.device("cpu"), torch.float32)
    assert name == "native" and failures == {}
    assert attention.verify("native", torch.device("cpu"), torch.float32) is None


def test_unusable_backend_is_detected_and_replaced():
    # flash-attn is not installed here (and needs CUDA): the real call fails, the probe falls back
    reason = attention.verify("flash", torch.device("cpu"), torch.float32)
    assert reason is not None
    name, failures = attention.choose("flash", torch.device("cpu"), torch.float32)
    assert name == "native" and "flash" in failures


def test_verify_rejects_a_wrong_result(monkeypatch):
    import diffusers.models.attention_dispatch as ad

    real = ad.dispatch_attention_fn
    monkeypatch.setattr(ad, "dispatch_attention_fn", lambda q, k, v, **kw: real(q, k, v, **kw) * 1.5)
    assert "wrong result" in attention.verify("native", torch.device("cpu"), torch.float32)


def _failing_backend(gm, example_inputs):
    raise RuntimeError("this compiler always fails")


def test_compile_per_module_with_fallback():
    torch.manual_seed(0)
    good, bad = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU()), torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    want = bad(good(x))
    report = compile_modules({"good": good}, backend="eager")
    report_bad = compile_modules({"bad": bad}, backend=_failing_backend)
    got = bad(good(x))
    assert torch.allclose(got, want)
    assert report == {"good": "compiled"}
    assert report_bad["bad"].startswith("eager (") and "always fails" in report_bad["bad"]
    assert bad(good(x)).shape == (3, 4)  # stays on eager, no retry storm
    uncompile({"good": good, "bad": bad})
    assert "forward" not in good.__dict__ and "forward" not in bad.__dict__


def test_compile_guard_falls_back_on_compiler_errors_only():
    import torch._dynamo.exc as dynamo_exc

    from engine.compile_guard import CompileGuard

    def eager(x):
        return x + 1

    def oom(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def unsupported(x):
        raise dynamo_exc.Unsupported("a graph break dynamo cannot handle")

    report: dict[str, str] = {}
    g = CompileGuard("m", eager, oom, report)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # the model's failure: re-raised, still compiled
        g(1)
    assert report == {"m": "compiled"} and g.compiled is oom
    g = CompileGuard("m", eager, unsupported, report)
    assert g(1) == 2 and g.compiled is None and report["m"].startswith("eager (Unsupported: a graph break")
    assert g(2) == 3  # eager for good


def test_engine_compile_option_falls_back_per_module(tiny_flux2_dir, monkeypatch):
    from engine import create_engine

    real_compile = torch.compile
    counter = {"n": 0}

    def flaky_compile(fn, **kw):  # every other module gets a compiler that fails
        counter["n"] += 1
        backend = "eager" if counter["n"] % 2 else _failing_backend
        return real_compile(fn, backend=backend)

    from diffusers import Flux2KleinPipeline
    from PIL import Image

    monkeypatch.setattr(compile_mod.torch, "compile", flaky_compile)
    # 64 x 64: the smallest image the pipeline takes
    compiled = create_engine("flux2-tiny", compile=True, tiny_dir=tiny_flux2_dir, width=64, height=64, steps=2,
                             device="cpu", dtype="float32")
    f = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    out = compiled.edit(f, prompt="x", seed=0).numpy()
    # half the modules compiled, half back on eager: still the frame the reference pipeline makes
    pipe = Flux2KleinPipeline.from_pretrained(tiny_flux2_dir)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(image=Image.fromarray(f), prompt="x", height=64, width=64, num_inference_steps=2,
               generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert np.abs(out.astype(int) - (ref * 255).round().astype(int)).max() <= 1
    report = compiled.info["compile"]
    assert set(report) == {"transformer.transformer_blocks.0", "transformer.single_transformer_blocks.0",
                           "transformer.single_transformer_blocks.1", "vae.encoder", "vae.decoder"}
    states = set(v.split(" ")[0] for v in report.values())
    assert states == {"compiled", "eager"}


def test_repeated_blocks_compile_through_diffusers_and_fall_back_per_block():
    """compile_repeated_blocks (diffusers) compiles every block; a block whose compiler fails runs eagerly, the others
    stay compiled; a compiler refused at once leaves every block eager; the output is the eager model's."""
    from engine.flux2.tiny import TEST, build_transformer

    model = build_transformer(TEST)
    x, ids = torch.randn(1, 6, 128), torch.zeros(6, 4, dtype=torch.int64)
    text, txt_ids = torch.randn(1, 3, 3 * TEST.text_hidden), torch.zeros(3, 4, dtype=torch.int64)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return model(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([0.5]), img_ids=ids,
                         txt_ids=txt_ids, return_dict=False)[0]

    want = run()
    real_compile = torch.compile
    calls = {"n": 0}

    def flaky_compile(fn, **kw):  # the first block's compiler fails, the others work
        calls["n"] += 1
        return real_compile(fn, backend=_failing_backend if calls["n"] == 1 else "eager")

    report: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "compile", flaky_compile)
        compile_mod.compile_repeated_blocks(model, "t", report)
    torch.testing.assert_close(run(), want)
    assert calls["n"] == 3 and set(report) == {"t.transformer_blocks.0", "t.single_transformer_blocks.0",
                                                "t.single_transformer_blocks.1"}
    assert report["t.transformer_blocks.0"].startswith("eager (") and "always fails" in report["t.transformer_blocks.0"]
    assert report["t.single_transformer_blocks.0"] == report["t.single_transformer_blocks.1"] == "compiled"
    torch.testing.assert_close(run(), want)  # stays on eager, no retry storm

    fresh = build_transformer(TEST)
    refused: dict[str, str] = {}
    compile_mod.compile_repeated_blocks(fresh, "t", refused, backend="no-such-backend")
    assert len(refused) == 3 and all(v.startswith("eager (") for v in refused.values())
    assert all(b._compiled_call_impl is None for _, b in compile_mod._blocks(fresh))
