import subprocess
import sys
from pathlib import Path

import pytest

from vcam.config import Config, ConfigError, effective_toml, load_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_load():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.output.camera_label == "FluxRT Camera" and cfg.control.host == "127.0.0.1"
    assert [p.name for p in cfg.presets] == ["watercolor", "anime", "cyberpunk", "oil"]
    assert (REPO / "configs" / "default.toml").read_text() == (REPO / "vcam" / "default.toml").read_text()


def test_a_config_file_overrides_the_defaults_key_by_key(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[engine]\nsteps = 4\n[[presets]]\nname = "only"\nprompt = "one look"\n')
    cfg = load_config(f)
    assert cfg.engine.steps == 4 and cfg.engine.width == 512  # the rest of [engine] stays
    assert cfg.interpolation == load_config().interpolation  # untouched sections stay
    assert [p.name for p in cfg.presets] == ["only"]  # an array is replaced whole


def test_example_configs_are_valid():
    paths = sorted((REPO / "configs").glob("*.toml"))
    assert len(paths) >= 2
    streamer = load_config(REPO / "configs" / "obs-streamer.toml")
    assert streamer.obs.enabled and set(streamer.scenes.values()) <= {p.name for p in streamer.presets}
    assert all(isinstance(load_config(p), Config) for p in paths)


def test_every_problem_is_one_line_naming_key_value_and_allowed(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[engine]\nsteps = 12\nwidth = 500\nstepz = 3\n[source]\nkind = "cam"\nfps = "fast"\n')
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    lines = e.value.lines
    assert len(lines) == 5
    text = "\n".join(lines)
    assert "engine.steps = 12" in text and "less than or equal to 8" in text
    assert "engine.width = 500" in text and "multiple of 16" in text
    assert "engine.stepz = 3: unknown engine option" in text and "steps" in text  # lists the allowed keys
    assert "source.kind = 'cam'" in text and "'synthetic', 'webcam' or 'file'" in text
    assert "source.fps = 'fast'" in text


def test_overrides_win_over_file_and_are_validated(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[engine]\nsteps = 4\n")
    assert load_config(f).engine.steps == 4
    assert load_config(f, {"engine.steps": 3}).engine.steps == 3
    with pytest.raises(ConfigError, match="engine.steps = 0"):
        load_config(f, {"engine.steps": 0})


def test_cross_references_are_checked():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config(overrides={"scenes": {"Live": "nope"}})
    with pytest.raises(ConfigError, match="kind = 'file' needs path"):
        load_config(overrides={"source.kind": "file"})


def test_interpolation_exp_means_power_of_two():
    assert load_config(overrides={"interpolation.exp": 3}).interpolation.factor == 8


def test_missing_file_and_bad_toml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[engine\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_effective_toml_round_trips_and_masks_password(tmp_path):
    cfg = load_config(overrides={"obs.password": "hunter2secret"})
    text = effective_toml(cfg)
    assert "hunter2secret" not in text and "********" in text
    again = tmp_path / "again.toml"
    again.write_text(text.replace('"********"', '"hunter2secret"'))
    assert load_config(again) == cfg


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vcam.tools.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_cli_exit_2_with_one_line_per_problem_and_nothing_started(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine]\nsteps = 99\n[output]\nfps = -1\n")
    r = _cli("run", "--config", str(bad), "--duration", "1")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "engine.steps = 99" in r.stderr and "output.fps = -1" in r.stderr
    assert "running" not in r.stdout


def test_cli_config_show_applies_flags():
    r = _cli("config", "show", "--set", "engine.steps=3", "--set", "prompt.text=neon city")
    assert r.returncode == 0, r.stderr
    assert "steps = 3" in r.stdout and 'text = "neon city"' in r.stdout
    bad = _cli("config", "show", "--set", "engine.steps")
    assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr


def _keys(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_readme_documents_every_config_key():
    readme = (REPO / "README.md").read_text()
    missing = [k for k in _keys(Config) if k not in ("presets", "scenes") and f"`{k}`" not in readme]
    assert not missing, f"README's configuration reference lacks {missing}"


def test_retired_preview_address_names_the_key_and_the_fix():
    with pytest.raises(ConfigError, match=r"output.preview_port: no longer used.*control server.*/stream.mjpg.*remove"):
        load_config(overrides={"output.preview_port": 8765})


def test_secrets_never_appear_in_config_errors():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={"obs.password": ["hunter2secret"]})
    assert "obs.password" in str(e.value) and "hunter2secret" not in str(e.value)


def test_numbers_given_for_text_keys_are_taken_as_text():
    cfg = load_config(overrides={"source.webcam": 1, "prompt.text": 2024, "obs.password": 123456})
    assert cfg.source.webcam == "1" and cfg.prompt.text == "2024"
    assert cfg.obs.password.get_secret_value() == "123456"
