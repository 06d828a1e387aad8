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
    assert cfg.engine.steps == 4 and cfg.engine.width == load_config().engine.width  # the rest of [engine] stays
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
    assert len(errors) == 2 and f"error: {bad}: engine.steps = 99: " in r.stderr
    assert f"error: {bad}: output.fps = -1" in r.stderr  # the file's values: under the file's name
    assert "running" not in r.stdout


def test_errors_name_where_the_value_came_from(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("[engine]\nsteps = 99\nwidth = 500\n")
    sets = {"engine.width": 512, "output.fps": -1}
    origins = {"engine.width": "--set engine.width=512", "output.fps": "--set output.fps=-1"}
    with pytest.raises(ConfigError) as e:
        load_config(f, sets, origins)
    # the file's bad steps under the file's name; the --set value under what was typed; the width the file
    # got wrong was replaced by --set, so it is no error at all
    assert e.value.lines == [f"{f}: engine.steps = 99: Input should be less than or equal to 8 (allowed: 1-8)",
                             "--set output.fps=-1: Input should be greater than 0 (allowed: > 0, <= 240)"]
    with pytest.raises(ConfigError) as e:
        load_config(None, {"engine.name": "flux3"}, {"engine.name": "--engine flux3"})
    assert e.value.lines == ["--engine flux3: Input should be 'auto', 'passthrough', 'flux2' or 'flux2-tiny'"]
    # "defaults" only for what nobody overrode; a whole section given later replaces the file's keys in it
    with pytest.raises(ConfigError) as e:
        load_config(f, {"engine": {"steps": 0}})
    assert e.value.lines == ["override: engine.steps = 0: Input should be greater than or equal to 1 (allowed: 1-8)"]


def test_errors_about_several_keys_name_each_origin_of_their_values(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[[presets]]\nname = "only"\nprompt = "one look"\n')
    with pytest.raises(ConfigError) as e:
        load_config(f, {"prompt.preset": "nope"}, {"prompt.preset": "--set prompt.preset=nope"})
    assert e.value.lines[0].startswith(f"{f}, --set prompt.preset=nope: ")
    assert "prompt.preset 'nope' is not a preset" in e.value.lines[0]
    with pytest.raises(ConfigError) as e:
        load_config(None, {"source.kind": "file"}, {"source.kind": "--source file"})
    assert e.value.lines[0].startswith("--source file: source: ") and "needs path" in e.value.lines[0]
    with pytest.raises(ConfigError, match=r"^--set engine.steps.x=1: steps is not a section$"):
        load_config(None, {"engine.steps.x": 1}, {"engine.steps.x": "--set engine.steps.x=1"})


def test_cli_errors_name_the_option_typed(tmp_path):
    r = _cli("config", "show", "--set", "engine.steps=99", "--set", "obs.password=[1]")
    assert r.returncode == 2
    assert "error: --set engine.steps=99: Input should be less than or equal to 8 (allowed: 1-8)" in r.stderr
    assert "error: --set obs.password=********: " in r.stderr and "[1]" not in r.stderr  # a secret stays masked
    r = _cli("run", "--engine", "flux3", "--duration", "1")
    assert r.returncode == 2 and "error: --engine flux3: Input should be 'auto'" in r.stderr, r.stderr


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
