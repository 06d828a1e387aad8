"""Benchmarks behind `fluxrt-cam bench ...`: each returns a JSON-able dict and prints a table."""
from __future__ import annotations


def device_label(device) -> str:
    """What a benchmark ran on, for its JSON and table: "cuda:0 (NVIDIA H100 80GB HBM3)" or
    "cpu (<model name>, 16 torch threads)". `device`: a torch.device or its string ("cuda" means cuda:0)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    if dev.type != "cpu":
        return str(dev)
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"cpu ({model or 'unknown model'}, {torch.get_num_threads()} torch threads)"
