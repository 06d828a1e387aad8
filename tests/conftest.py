"""Shared fixtures (keep minimal; helpers add their own in their test files)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_flux2_dir(tmp_path_factory):
    """A tiny randomly initialised FLUX.2 klein (test preset) saved as a diffusers folder, built once a session."""
    from engine.flux2.tiny import TEST, ensure_tiny

    return ensure_tiny(TEST, folder=tmp_path_factory.mktemp("flux2") / "tiny-klein")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids OpenMP contention (often 10x+)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _own_runtime_dir(tmp_path_factory, monkeypatch):
    """Each test its own daemon lock file (vcam/instance_lock.py): tests never see each other's, nor a
    daemon the developer runs."""
    monkeypatch.setenv("FLUXRT_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime")))
