"""`fluxrt-cam install-service`: the systemd user unit it writes (into a temporary XDG_CONFIG_HOME), --print
writing nothing, no overwrite of a different unit without --force, --enable's systemctl calls, and the
Windows / macOS steps."""
from __future__ import annotations

import os
import plistlib
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vcam.tools import service
from vcam.tools.cli import app

runner = CliRunner()


@pytest.fixture
def xdg(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "config home"  # a space: the paths in the unit must survive it
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def exec_start(unit: str) -> str:
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


def test_unit_runs_this_python_with_the_config_and_restarts_on_failure(xdg):
    r = runner.invoke(app, ["install-service", "--platform", "linux"])
    assert r.exit_code == 0, r.output
    unit_file = xdg / "systemd" / "user" / "fluxrt-cam.service"
    unit = unit_file.read_text()
    config = xdg / "fluxrt" / "config.toml"
    # the venv's python as it is (not resolved out of the venv), quoted because the path holds a space
    assert exec_start(unit) == f'ExecStart={sys.executable} -m vcam.tools.cli run --config "{config}"'
    assert "\nRestart=on-failure\n" in unit and "\nWantedBy=default.target\n" in unit
    # the default config it points at now exists and the daemon accepts it
    assert config.is_file()
    assert runner.invoke(app, ["config", "show", "--config", str(config)]).exit_code == 0
    # the enable commands are printed, not run
    assert "systemctl --user daemon-reload && systemctl --user enable --now fluxrt-cam" in r.output
    # again: same unit, nothing to change
    r2 = runner.invoke(app, ["install-service", "--platform", "linux"])
    assert r2.exit_code == 0 and "unchanged" in r2.output
    assert unit_file.read_text() == unit


def test_given_config_is_absolute_and_checked(xdg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text("[engine]\nsteps = 3\n")
    r = runner.invoke(app, ["install-service", "--print", "--config", "mine.toml"])
    assert r.exit_code == 0, r.output
    assert exec_start(r.output).endswith(f"--config {tmp_path / 'mine.toml'}")  # systemd runs from another cwd

    (tmp_path / "bad.toml").write_text("[engine]\nsteps = 99\n")
    r = runner.invoke(app, ["install-service", "--config", "bad.toml"])
    assert r.exit_code == 1 and "engine.steps" in r.output and "fix it first" in r.output
    assert files_under(xdg) == []


def test_print_writes_nothing(xdg):
    r = runner.invoke(app, ["install-service", "--print", "--platform", "linux"])
    assert r.exit_code == 0, r.output
    assert exec_start(r.output).startswith(f"ExecStart={sys.executable} -m vcam.tools.cli run --config ")
    assert "Restart=on-failure" in r.output
    assert files_under(xdg) == []  # neither the unit nor the default config


def test_different_unit_is_kept_without_force(xdg):
    unit_file = xdg / "systemd" / "user" / "fluxrt-cam.service"
    unit_file.parent.mkdir(parents=True)
    unit_file.write_text("[Service]\nExecStart=/usr/bin/my-own-fluxrt\n")
    r = runner.invoke(app, ["install-service", "--platform", "linux"])
    assert r.exit_code == 1
    assert "already exists" in r.output and "--force" in r.output
    assert unit_file.read_text() == "[Service]\nExecStart=/usr/bin/my-own-fluxrt\n"

    r = runner.invoke(app, ["install-service", "--platform", "linux", "--force"])
    assert r.exit_code == 0 and "replaced" in r.output
    assert "ExecStart=/usr/bin/my-own-fluxrt" not in unit_file.read_text()
    assert "Restart=on-failure" in unit_file.read_text()


def test_enable_runs_systemctl_user(xdg, tmp_path, monkeypatch):
    """A stand-in `systemctl` first on PATH records its arguments (this machine runs no user systemd)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    r = runner.invoke(app, ["install-service", "--platform", "linux", "--enable"])
    assert r.exit_code == 0, r.output
    assert calls.read_text().splitlines() == ["--user daemon-reload", "--user enable --now fluxrt-cam"]

    fake.write_text('#!/bin/sh\necho "Failed to connect to bus: No medium found" >&2\nexit 1\n')
    r = runner.invoke(app, ["install-service", "--platform", "linux", "--enable"])
    assert r.exit_code == 1
    assert "Failed to connect to bus" in r.output and "loginctl enable-linger" in r.output


def test_systemd_quoting():
    assert service._systemd_word("/opt/venv/bin/python") == "/opt/venv/bin/python"
    assert service._systemd_word("/a b/c") == '"/a b/c"'
    assert service._systemd_word('/we"ird\\') == '"/we\\"ird\\\\"'
    assert service._systemd_word("/100%/$HOME") == "/100%%/$$HOME"  # no specifier or variable expansion
    with pytest.raises(service.ServiceError, match="control character"):
        service._systemd_word("/a\nb")


def test_macos_steps_use_launchctl(xdg):
    r = runner.invoke(app, ["install-service", "--platform", "macos"])
    assert r.exit_code == 0, r.output
    assert "launchctl load -w ~/Library/LaunchAgents/org.fluxrt.camera.plist" in r.output
    start, end = r.output.index("<?xml"), r.output.index("</plist>") + len("</plist>")
    plist = plistlib.loads(r.output[start:end].encode())
    assert plist["ProgramArguments"][1:5] == ["-m", "vcam.tools.cli", "run", "--config"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert files_under(xdg) == []  # steps only


def test_windows_steps_use_schtasks(xdg):
    r = runner.invoke(app, ["install-service", "--platform", "windows", "--config", r"C:\Users\me\fluxrt.toml"])
    assert r.exit_code == 0, r.output
    create = next(line for line in r.output.splitlines() if "schtasks /create" in line)
    assert "/sc onlogon" in create and '/tn "FluxRT Camera"' in create
    assert r'-m vcam.tools.cli run --config \"C:\Users\me\fluxrt.toml\"' in create
    assert files_under(xdg) == []


def test_unknown_platform_is_refused(xdg):
    r = runner.invoke(app, ["install-service", "--platform", "beos"])
    assert r.exit_code == 1 and "linux, windows, macos" in r.output
