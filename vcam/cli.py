"""`fluxrt-cam` command line. Each command is a thin wrapper over a module that does the work."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vcam.config import Config, ConfigError, effective_toml, load_config, parse_value

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="FluxRT Camera: a real-time AI virtual camera.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configuration.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (each finishes in under a minute on 2 CPU cores).")
models_app = typer.Typer(no_args_is_help=True, help="Download and list model weights.")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")
app.add_typer(models_app, name="models")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML config file (default: embedded defaults).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: --set engine.steps=4 (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _fail(lines: list[str], code: int = 2) -> None:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def load(config: Path | None, sets: list[str] | None, **flags: Any) -> Config:
    """Config file + `--set` overrides + explicit flags (None = not given); exits 2 on any problem."""
    overrides: dict[str, Any] = {}
    for item in sets or []:
        if "=" not in item:
            _fail([f"--set {item!r}: expected KEY=VALUE, e.g. --set engine.steps=4"])
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value.strip())
    overrides.update({k: v for k, v in flags.items() if v is not None})
    try:
        return load_config(config, overrides)
    except ConfigError as e:
        _fail(e.lines)
    raise AssertionError  # unreachable


def emit(result: dict[str, Any], as_json: bool, table: str) -> None:
    typer.echo(json.dumps(result, indent=2) if as_json else table)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the effective configuration (file + overrides), secrets masked."""
    typer.echo(effective_toml(load(config, set_)), nl=False)


# ---- daemon commands (vcam.daemon) ---------------------------------------------------------------
# ---- engine / models commands (engine.flux2, vcam.models) ---------------------------------------
# ---- control commands (vcam.control) -------------------------------------------------------------
# ---- benchmarks ----------------------------------------------------------------------------------


def main() -> None:
    app()


if __name__ == "__main__":
    main()
