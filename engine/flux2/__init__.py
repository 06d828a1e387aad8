"""FLUX.2 [klein] real-time engine: loader, tiny offline models, prompt cache, serving loop.

Heavy imports (torch, diffusers, transformers) happen inside the submodules, not here.
"""
