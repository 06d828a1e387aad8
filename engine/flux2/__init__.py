"""FLUX.2 [klein] real-time engine.

    catalog.py    the klein checkpoints (hub id, folder, licence, download command)
    loader.py     find + validate + load a diffusers-layout folder or a cached hub id
    tiny.py       tiny randomly initialised klein built offline with the real classes (tests, CPU demo, bench)
    latents.py    latent layout (patchify, pack, ids), VAE adapters (full / TAEF2), the per-(shape, steps, seed) plan
    text.py       prompt-embedding cache around the Qwen3 text encoder
    attention.py  attention backend probing
    compile.py    torch.compile: transformer blocks via diffusers' compile_repeated_blocks, VAE per module;
                  each falls back to eager on its own
    engine.py     Flux2Engine, the serving loop, and create_flux2_engine (the registry's entry point)

Heavy imports (torch, diffusers, transformers) happen inside the submodules, not here.
"""
