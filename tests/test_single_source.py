"""Every default and bound is written once: in the option models (engine/options.py for the engine's,
vcam/config.py for the daemon's own sections). default.toml, the README's configuration table and the
rest of the code are checked against them here, so a drift fails a test instead of confusing a user."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from engine import options as engine_options
from vcam.config import Config, default_toml, load_config

REPO = Path(__file__).resolve().parents[1]
ENGINE_SECTIONS = ("engine", "cache", "interpolation")  # sections whose types the engine owns
RANGE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)(?![\w.])")  # "1-8", "0-255", "16-2048"


def _sections() -> dict[str, type[BaseModel]]:
    return {name: f.annotation for name, f in Config.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}


def _default(section: str | None, key: str):
    field = (_sections()[section] if section else Config).model_fields[key]
    value = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value) if isinstance(value, Path) else value


def _bounds(section: str, key: str) -> tuple[float, float] | None:
    meta = _sections()[section].model_fields[key].metadata
    lo = next((getattr(m, "ge") for m in meta if hasattr(m, "ge")), None)
    hi = next((getattr(m, "le") for m in meta if hasattr(m, "le")), None)
    return None if lo is None or hi is None else (float(lo), float(hi))


def _ranges_match(section: str, key: str, text: str) -> list[str]:
    """Ranges written in `text` ("1-8") that differ from the field's declared bounds."""
    if section not in ENGINE_SECTIONS:
        return []
    bad = []
    for lo, hi in RANGE.findall(text):
        if (float(lo), float(hi)) != _bounds(section, key):
            bad.append(f"{section}.{key}: '{lo}-{hi}' but the model allows {_bounds(section, key)}")
    return bad


# ---- (a) default.toml ------------------------------------------------------------------------------------
def test_default_toml_loads_to_the_models_own_defaults():
    cfg = load_config()
    for name, model in _sections().items():
        assert getattr(cfg, name) == model(), f"[{name}] in default.toml differs from {model.__name__}'s defaults"
    assert cfg.log_level == _default(None, "log_level")


def test_default_toml_sets_every_key_with_a_value_and_no_other():
    raw = tomllib.loads(default_toml())
    for name, model in _sections().items():
        table = raw.get(name, {})
        unknown = set(table) - set(model.model_fields)
        assert not unknown, f"default.toml [{name}] sets keys the model lacks: {unknown}"
        unset = [k for k, f in model.model_fields.items() if f.default is not None and k not in table]
        assert not unset, f"default.toml [{name}] leaves out keys that have a default: {unset}"
        for key, value in table.items():
            assert value == _default(name, key), f"default.toml {name}.{key} = {value!r}, model default {_default(name, key)!r}"


def test_ranges_in_default_toml_comments_are_the_models_bounds():
    section, bad = None, []
    for line in default_toml().splitlines():
        if m := re.match(r"^\[(\w+)\]$", line.strip()):
            section = m.group(1)
        elif section and (m := re.match(r"^(\w+)\s*=.*#(.*)$", line)):
            bad += _ranges_match(section, m.group(1), m.group(2))
    assert not bad, bad


# ---- (b) the README's configuration table ----------------------------------------------------------------
def _readme_rows() -> list[tuple[list[str], str, str]]:
    text = (REPO / "README.md").read_text()
    table = text.split("## Configuration reference", 1)[1].split("| key | default | meaning |", 1)[1]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        key_cell, default_cell, meaning = (c.strip() for c in line.strip("|").split("|", 2))
        if key_cell.startswith("`["):
            continue  # [[presets]] and [scenes]: examples, not defaults
        rows.append((re.findall(r"`([^`]+)`", key_cell), default_cell, meaning))
    return rows


def _split_key(dotted: str) -> tuple[str | None, str]:
    section, _, key = dotted.rpartition(".")
    return section or None, key


def test_readme_table_defaults_are_the_models_defaults():
    rows = _readme_rows()
    assert len(rows) > 30
    described = []  # rows whose default is put in words (a long prompt), not a value
    for keys, default_cell, _ in rows:
        if default_cell == "unset":
            values = [None] * len(keys)
        elif default_cell.startswith("`"):
            values = [tomllib.loads(f"v = {v}")["v"] for v in re.findall(r"`([^`]+)`", default_cell)]
            values = values * len(keys) if len(values) == 1 else values
        else:
            described += keys
            continue
        assert len(values) == len(keys), f"README row {keys}: {len(keys)} keys, {len(values)} defaults"
        for dotted, value in zip(keys, values):
            assert value == _default(*_split_key(dotted)), f"README says {dotted} defaults to {value!r}; the model: " \
                                                           f"{_default(*_split_key(dotted))!r}"
    assert described == ["prompt.text"]


def test_ranges_in_the_readme_table_are_the_models_bounds():
    bad = []
    for keys, _, meaning in _readme_rows():
        for dotted in keys:
            section, key = _split_key(dotted)
            bad += _ranges_match(section, key, meaning) if section else []
    assert not bad, bad


# ---- (c) nothing else writes the engine's defaults or bounds -----------------------------------------------
def _engine_bounds() -> dict[str, tuple]:
    """(name, ge, le, multiple_of) of every bounded engine option, e.g. steps (1, 8, None)."""
    out = {}
    for model in (engine_options.ModelOptions, engine_options.CacheOptions, engine_options.InterpolationOptions):
        for name, f in model.model_fields.items():
            b = {k: getattr(m, k) for m in f.metadata for k in ("ge", "le", "multiple_of") if hasattr(m, k)}
            if b:
                out[name] = (b.get("ge"), b.get("le"), b.get("multiple_of"))
    return out


def _code_files() -> list[Path]:
    own = REPO / "engine" / "options.py"
    return [p for d in ("engine", "vcam") for p in sorted((REPO / d).rglob("*.py")) if p != own]


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _declared_bounds(path: Path):
    """(line, name, (ge, le, multiple_of)) of each `name: T = Field(..., ge=, le=)` or Annotated[..., Field(...)]."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            for call in ast.walk(node):
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Field":
                    kw = {k.arg: _literal(k.value) for k in call.keywords}
                    if any(k in kw for k in ("ge", "le", "multiple_of")):
                        yield node.lineno, node.target.id, (kw.get("ge"), kw.get("le"), kw.get("multiple_of"))


def test_engine_bounds_are_declared_only_in_engine_options():
    owned = _engine_bounds()
    assert owned["steps"] == (1, engine_options.MAX_STEPS, None) and owned["refresh_period"] == (0, 10_000, None)
    twice = [f"{p.relative_to(REPO)}:{line} {name} {b}" for p in _code_files()
             for line, name, b in _declared_bounds(p) if owned.get(name) == b]
    assert not twice, f"engine bounds written again (reuse engine.options' types instead): {twice}"


@pytest.mark.parametrize("pattern, what", [
    (r"2\s*\*\*\s*32|4294967295", "the seed bound (engine.options.Seed)"),
    (r"le\s*=\s*(8|MAX_STEPS)\b.*|MAX_STEPS\s*=", "the steps bound (engine.options.Steps / MAX_STEPS)"),
    (r"""["']~/\.cache/fluxrt/models""", "the models folder (engine.options.DEFAULT_MODELS_DIR)"),
    (r"""["']FLUX\.2-klein-4B["']""", "the default model (engine.options.DEFAULT_MODEL, from the catalogue)"),
])
def test_engine_defaults_are_written_only_in_engine_options(pattern, what):
    catalogue = REPO / "engine" / "flux2" / "catalog.py"  # the folder names DEFAULT_MODEL is taken from
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in _code_files() if p != catalogue
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line)]
    assert not hits, f"{what} written outside engine/options.py: {hits}"


def test_config_and_engine_errors_state_the_same_bound():
    """Validated once per entry point, by the same type: the config and the engine API say the same."""
    from engine.errors import EngineConfigError
    from engine.options import EngineOptions, ModelOptions
    from vcam.config import ConfigError

    with pytest.raises(ConfigError) as cfg_err:
        load_config(overrides={"engine.steps": 12, "presets": [{"name": "a", "prompt": "b", "steps": 12}]})
    with pytest.raises(EngineConfigError) as eng_err:
        EngineOptions.parse(steps=12)
    with pytest.raises(EngineConfigError) as frame_err:
        ModelOptions.check("steps", 12)  # a per-frame override
    hint = f"(allowed: 1-{engine_options.MAX_STEPS})"
    assert str(cfg_err.value).count(hint) == 2 and hint in str(eng_err.value) and hint in str(frame_err.value)
