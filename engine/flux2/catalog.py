"""The FLUX.2 [klein] checkpoints FluxRT knows: hub repository, folder name, licence, download command."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KleinModel:
    key: str  # `fluxrt-cam models download <key>`
    repo_id: str  # Hugging Face hub repository
    folder: str  # folder name under models_dir
    licence: str
    kv: bool  # the 9B-KV checkpoint (Flux2KleinKVPipeline)

    @property
    def command(self) -> str:
        return f"fluxrt-cam models download {self.key}"


KLEIN_MODELS: dict[str, KleinModel] = {
    m.key: m
    for m in (
        KleinModel("klein-4b", "black-forest-labs/FLUX.2-klein-4B", "FLUX.2-klein-4B", "Apache-2.0", kv=False),
        KleinModel("klein-9b", "black-forest-labs/FLUX.2-klein-9B", "FLUX.2-klein-9B",
                   "FLUX non-commercial licence", kv=False),
        KleinModel("klein-9b-kv", "black-forest-labs/FLUX.2-klein-9b-kv", "FLUX.2-klein-9b-kv",
                   "FLUX non-commercial licence", kv=True),
    )
}


def match(model: str) -> KleinModel | None:
    """The catalogue entry a `model` option names (key, folder name or hub id, case-insensitive)."""
    low = model.strip().rstrip("/").lower()
    for m in KLEIN_MODELS.values():
        if low in (m.key, m.folder.lower(), m.repo_id.lower()) or low.endswith("/" + m.folder.lower()):
            return m
    return None


def download_hint(model: str) -> str:
    m = match(model)
    if m is not None:
        return f"get it with `{m.command}` ({m.licence})"
    keys = ", ".join(KLEIN_MODELS)
    return f"get a FLUX.2 [klein] model with `fluxrt-cam models download <{keys}>` and set engine.model to its folder"
