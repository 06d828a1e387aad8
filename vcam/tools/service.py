"""`fluxrt-cam install-service`: start the daemon at login.

Linux: a systemd user unit (`$XDG_CONFIG_HOME/systemd/user/fluxrt-cam.service`, else
`~/.config/systemd/user/`) running `<this python> -m vcam.tools.cli run --config <file>`, restarted when
it fails. The unit is written but systemctl is only run with `--enable`, so nothing starts behind the
user's back. Windows (Task Scheduler) and macOS (a launchd LaunchAgent): the steps are printed, as the
user runs them in their own shell.

The python is `sys.executable` as it is, not resolved: a virtual environment's `bin/python` is a
symlink to the system interpreter, and resolving it would run the service outside the environment
where FluxRT Camera is installed.
"""
from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vcam.config import ConfigError, load_config
from vcam.control.token import default_token_path

UNIT_NAME = "fluxrt-cam.service"
TASK_NAME = "FluxRT Camera"
LAUNCHD_LABEL = "org.fluxrt.camera"
PLATFORMS = ("linux", "windows", "macos")
ENABLE_COMMANDS = (("systemctl", "--user", "daemon-reload"), ("systemctl", "--user", "enable", "--now", "fluxrt-cam"))
# stand-ins when the steps are printed for another platform than this one (`--platform`, documentation)
_PLACEHOLDERS = {"windows": (r"C:\path\to\fluxrt\.venv\Scripts\python.exe", r"C:\Users\you\.config\fluxrt\config.toml"),
                 "macos": ("/path/to/fluxrt/.venv/bin/python", "/Users/you/.config/fluxrt/config.toml"),
                 "linux": ("/path/to/fluxrt/.venv/bin/python", "/home/you/.config/fluxrt/config.toml")}


class ServiceError(RuntimeError):
    """What went wrong and the fix, in one line."""


def host_platform(platform: str = sys.platform) -> str:
    return "windows" if platform == "win32" else "macos" if platform == "darwin" else "linux"


def default_config_path() -> Path:
    """Next to the control token: the one per-user folder FluxRT Camera already has."""
    return default_token_path().parent / "config.toml"


def unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "systemd" / "user" / UNIT_NAME


def run_command(python: str, config: Path | str) -> list[str]:
    return [python, "-m", "vcam.tools.cli", "run", "--config", str(config)]


def _systemd_word(arg: str) -> str:
    """One ExecStart word: `%` and `$` would be expanded by systemd (specifiers, variables); spaces,
    quotes, backslashes and `;` (a command separator) need double quotes."""
    if any(ord(c) < 32 for c in arg):
        raise ServiceError(f"the path {arg!r} holds a control character, which a systemd unit cannot carry: "
                           f"move the file or the virtual environment to a plain path")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not any(c in arg for c in " \"'\\;"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(python: str, config: Path | str) -> str:
    exec_start = " ".join(_systemd_word(a) for a in run_command(python, config))
    return (
        "# Written by `fluxrt-cam install-service` (rewrite it with --force).\n"
        "[Unit]\n"
        "Description=FluxRT Camera: real-time AI virtual camera\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "# exit status 2 is a configuration error: restarting cannot fix it (`journalctl --user -u fluxrt-cam`)\n"
        "RestartPreventExitStatus=2\n"
        "# SIGTERM to the supervisor only: it stops its children and removes its shared memory itself\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=20\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def windows_steps(python: str, config: Path | str) -> str:
    inner = f'\\"{python}\\" -m vcam.tools.cli run --config \\"{config}\\"'
    return (
        "Windows: start FluxRT Camera at every logon with Task Scheduler. In a Command Prompt:\n\n"
        f'  schtasks /create /tn "{TASK_NAME}" /sc onlogon /rl limited /f /tr "{inner}"\n\n'
        f'Start it now:  schtasks /run /tn "{TASK_NAME}"\n'
        f'Remove it:     schtasks /delete /tn "{TASK_NAME}" /f\n'
        "Restart on failure: Task Scheduler -> the task -> Properties -> Settings -> \"If the task fails, "
        "restart every\" 1 minute. Use pythonw.exe instead of python.exe to run without a console window.\n"
    )


def launch_agent(python: str, config: Path | str, logs: str) -> str:
    plist = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": run_command(python, config),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart when it fails, not after a clean stop
        "ThrottleInterval": 5,
        "StandardOutPath": logs,
        "StandardErrorPath": logs,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
    }
    return plistlib.dumps(plist).decode()


def macos_steps(python: str, config: Path | str, home: str) -> str:
    path = f"~/Library/LaunchAgents/{LAUNCHD_LABEL}.plist"
    return (
        f"macOS: start FluxRT Camera at every login with a launchd LaunchAgent. Save this as {path}:\n\n"
        f"{launch_agent(python, config, f'{home}/Library/Logs/fluxrt-cam.log')}\n"
        f"then load it (starts it now and at every login):\n\n"
        f"  launchctl load -w {path}\n\n"
        f"Stop and remove it: launchctl unload -w {path} && rm {path}\n"
        f"Logs: ~/Library/Logs/fluxrt-cam.log\n"
    )


@dataclass
class Plan:
    platform: str
    python: str
    config: Path
    config_missing: bool  # the default config file does not exist yet (installing creates it)
    foreign: bool  # documenting another platform than this one: placeholders instead of real paths


def plan(config: Path | None, platform: str | None = None) -> Plan:
    """Which python and config the service runs; the config is checked now, not at the first login."""
    target = platform or host_platform()
    if target not in PLATFORMS:
        raise ServiceError(f"--platform {target!r}: choose one of {', '.join(PLATFORMS)}")
    if target != host_platform():
        python, default = _PLACEHOLDERS[target]
        return Plan(target, python, Path(config) if config else Path(default), False, True)
    path = Path(config).expanduser().absolute() if config else default_config_path()
    missing = config is None and not path.exists()
    if not missing:
        try:
            load_config(path)
        except ConfigError as e:
            raise ServiceError(f"{'; '.join(e.lines)} (the service would fail at every start: fix it first)") from None
    return Plan(target, sys.executable, path, missing, False)


def steps(p: Plan) -> str:
    """The autostart steps for a platform where this command writes nothing."""
    if p.platform == "windows":
        text = windows_steps(p.python, p.config)
    elif p.platform == "macos":
        text = macos_steps(p.python, p.config, "/Users/you" if p.foreign else str(Path.home()))
    else:
        text = unit_text(p.python, p.config)
    if p.foreign:
        text += (f"(written on another system: replace {p.python} with the python FluxRT Camera is installed in, "
                 f"and the config path with yours)\n")
    return text


def write_unit(text: str, path: Path, force: bool) -> str:
    """Write the unit; "written", "replaced" or "unchanged". A different unit is kept unless `force`."""
    old = path.read_text() if path.exists() else None
    if old == text:
        return "unchanged"
    if old is not None and not force:
        raise ServiceError(f"{path} already exists and differs from the unit this command writes: see the new one "
                           f"with `fluxrt-cam install-service --print`, then rerun with --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)  # never a half-written unit, even if interrupted
    return "replaced" if old is not None else "written"


def create_default_config(path: Path) -> None:
    """An empty config file for the service to run with: every key keeps its embedded default until edited."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path, "x") as f:  # "x": never overwrite a file another process just created
        f.write("# FluxRT Camera settings for the login service; keys not set here keep their defaults.\n"
                "# `fluxrt-cam config show --config <this file>` prints them all (see the README's reference).\n")


def enable(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
    for argv in ENABLE_COMMANDS:
        try:
            result = run(list(argv), capture_output=True, text=True)
        except FileNotFoundError:
            raise ServiceError("systemctl not found: this system does not run systemd; start `fluxrt-cam run` "
                               "from your desktop's autostart settings instead") from None
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip().splitlines()
            raise ServiceError(f"`{' '.join(argv)}` failed ({result.returncode}): {why[0] if why else 'no message'}; "
                               f"a user systemd needs a login session (loginctl enable-linger $USER for one without)")


def install(config: Path | None = None, *, print_only: bool = False, force: bool = False, enable_now: bool = False,
            platform: str | None = None) -> str:
    """What `fluxrt-cam install-service` does; returns the text to print. Raises ServiceError."""
    p = plan(config, platform)
    if p.platform != "linux" or p.foreign or print_only:
        return steps(p)  # nothing is written: the user runs these steps (or reads the unit) themselves
    path = unit_path()
    action = write_unit(unit_text(p.python, p.config), path, force)
    lines = [f"{path}: {action} (runs {p.python} -m vcam.tools.cli run --config {p.config})"]
    if p.config_missing:
        try:
            create_default_config(p.config)
            lines.append(f"{p.config}: created empty (all defaults); edit it to change the service's settings")
        except FileExistsError:
            pass
    if enable_now:
        enable()
        lines.append("enabled and started: `systemctl --user status fluxrt-cam`; "
                     "logs: `journalctl --user -u fluxrt-cam`")
    else:
        lines.append("start it now and at every login with:")
        lines.append("  " + " && ".join(" ".join(c) for c in ENABLE_COMMANDS))
    return "\n".join(lines) + "\n"
