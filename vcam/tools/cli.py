"""`fluxrt-cam` command line. Each command is a thin wrapper over a module that does the work."""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vcam.config import Config, ConfigError, effective_toml, load_config, parse_value, secret_key

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


def load(config: Path | None, sets: list[str] | None, *, flag_names: dict[str, str] | None = None,
         **flags: Any) -> Config:
    """Config file + `--set` overrides + explicit flags (None = not given); exits 2 on any problem. Each
    error names where its value came from: `--set KEY=VALUE`, the flag (`flag_names`: key -> "--engine"), a
    command's own setting (`key = value`), the file, the defaults."""
    overrides: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for item in sets or []:
        if "=" not in item:
            _fail([f"--set {item!r}: expected KEY=VALUE, e.g. --set engine.steps=4"])
        key, value = (part.strip() for part in item.split("=", 1))
        overrides[key] = parse_value(value)
        origins[key] = f"--set {key}={'********' if secret_key(key) else value}"
    for key, value in flags.items():
        if value is not None:
            overrides[key] = value
            name = (flag_names or {}).get(key)
            origins[key] = f"{name} {value}" if name else f"{key} = {value!r}"
    try:
        return load_config(config, overrides, origins)
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
DurationOpt = Annotated[Optional[float], typer.Option("--duration", help="Stop after this many seconds (default: until Ctrl-C).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No start-up progress and no live status line.")]
LogJsonOpt = Annotated[bool, typer.Option("--log-json", help="Logs as JSON lines on stderr; no live status line.")]
_LABEL = 16  # width of the labels of the start-up lines ("  page:", "  stream:" ...)


class _JsonLogFormatter(logging.Formatter):
    """One JSON object per record, for log collectors (journald, a service manager, Loki)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _StderrNow:
    """sys.stderr as it is at each write, not when logging was set up: while the live line shows, rich has
    replaced it with a proxy that prints above the line, so log lines do not tear it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _setup_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(_StderrNow())  # type: ignore[arg-type]
    handler.setFormatter(_JsonLogFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _line(label: str, text: str) -> str:
    return f"  {label + ':':<{_LABEL}}{text}"


def _serve(cfg: Config, duration: float | None, banner: str, quiet: bool = False, log_json: bool = False) -> None:
    """Start the daemon, say where to look, show the start-up and a live status line, run until Ctrl-C /
    SIGTERM / duration, stop cleanly."""
    from datetime import datetime

    from vcam.instance_lock import AlreadyRunning, InstanceLock

    # one daemon per user, refused before anything heavy is imported or started
    c = cfg.control
    try:
        lock = InstanceLock().acquire(control_url=f"http://{c.host}:{c.port}" if c.enabled else None,
                                      started=datetime.now().isoformat(timespec="seconds"))
    except AlreadyRunning as e:
        _fail([str(e)], code=1)
    try:
        _serve_locked(cfg, duration, banner, quiet, log_json, lock)
    finally:
        lock.release()  # the kernel would drop it at exit anyway; released here for callers that go on


def _serve_locked(cfg: Config, duration: float | None, banner: str, quiet: bool, log_json: bool, lock: Any) -> None:
    """`_serve` once this daemon holds the one-per-user lock."""
    import threading
    import time

    c = cfg.control
    from vcam.control.server import ApiStartError, bind_socket

    if c.enabled and c.port:  # a port taken by another program: say so now, not after the engine starts
        try:
            bind_socket(c.host, c.port).close()
        except ApiStartError as e:
            _fail([str(e)])
    from vcam.daemon import Daemon, stop_on_signals
    from vcam.shm import ChannelError

    _setup_logging(cfg.log_level, log_json)
    stop = threading.Event()
    stop_on_signals(stop)  # from the first moment: a signal during start-up still stops cleanly
    daemon = Daemon(cfg)
    try:
        daemon.start()
    except (ApiStartError, ChannelError) as e:
        _fail([str(e)])
    deadline = None if duration is None else time.monotonic() + duration
    try:
        if daemon.api is not None:
            lock.update(control_url=daemon.api.url)  # the real port (control.port = 0 picks one)
        # the control server listens now: where to look comes first, whatever the engine is still doing
        typer.echo(banner)
        _show_addresses(daemon.status(), cfg)
        if quiet:
            typer.echo("Ctrl-C stops; `fluxrt-cam status` shows fps and timings.")
        else:
            _watch(daemon, cfg, stop, deadline, live=sys.stdout.isatty() and not log_json)
        stop.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    finally:
        daemon.stop()
    typer.echo("stopped.")


def _show_addresses(st: dict[str, Any], cfg: Config) -> None:
    if st["control_url"]:
        what = "controls and the live picture" if st["stream_url"] else "controls"
        typer.echo(_line("page", f"{st['control_url']}/  ({what}; `fluxrt-cam prompt \"...\"` from a shell)"))
    if st["stream_url"]:
        typer.echo(_line("stream", f"{st['stream_url']}  (MJPEG: a browser, VLC, ffmpeg or an OBS media source)"))
    elif cfg.output.preview and not cfg.control.enabled:
        typer.echo(_line("stream", "off (the control server serves it; control.enabled = false)"))
    if cfg.output.virtual_camera == "off":
        typer.echo(_line("virtual camera", "off (output.virtual_camera = \"off\")"))
    typer.echo(_line("prompt", repr(st["settings"]["prompt"])))


def _engine_phase(inf: dict[str, Any]) -> str:
    """What the inference process is doing, in words: the phase it reports, or why it has none yet."""
    if inf.get("alive") is False:
        return "restarting the inference process" + (f" ({inf['last_error']})" if inf.get("last_error") else "")
    return inf.get("phase") or "starting the inference process"  # imports (torch) come before its first report


def _camera_line(out: dict[str, Any], cfg: Config) -> str | None:
    """The virtual camera's start-up line, once the output process has said how it went (None before)."""
    cam = (out.get("sinks") or {}).get("virtual_camera")
    if cam is None:
        return None
    if cam.get("active"):
        return f"{cfg.output.camera_label!r} on {cam.get('device')} - pick it in Zoom/Meet/OBS"
    return f"not available - {cam['error']}" if cam.get("error") else None


class _StartUp:
    """What changed since the last look at the daemon's status during start-up, as lines: the virtual
    camera once the output process reports it, the source's errors, each new engine phase."""

    def __init__(self, cfg: Config, live: bool):
        self.cfg, self.live = cfg, live
        self.camera_told = cfg.output.virtual_camera == "off"  # already said, with the addresses
        self.source_error: str | None = None
        self.phase: str | None = None
        self.since = time.monotonic()

    def news(self, st: dict[str, Any]) -> list[str]:
        lines = []
        if not self.camera_told and (cam := _camera_line(st["output"], self.cfg)):
            lines.append(_line("virtual camera", cam))
            self.camera_told = True
        error = st["source"].get("error")
        if error and error != self.source_error:
            lines.append(_line("source", error))
        self.source_error = error
        phase, now = _engine_phase(st["inference"]), time.monotonic()
        if phase != self.phase:
            if self.live and self.phase is not None:  # the spinner showed it; what stays is how long it took
                lines.append(_line("done", f"{self.phase}, {now - self.since:.1f} s"))
            elif not self.live and phase != "running":  # plain lines: each phase as it starts
                lines.append(_line("starting", phase))
            self.phase, self.since = phase, now
        return lines

    def spinner_text(self) -> str:
        return f"{self.phase}  {time.monotonic() - self.since:.0f} s"


def _watch(daemon: Any, cfg: Config, stop: threading.Event, deadline: float | None, live: bool) -> None:
    """Start-up progress (the engine's build, load, compile and warm-up phases) until the engine runs, then,
    on a terminal (`live`), a status line refreshed in place until `stop` or `deadline`. Not on a terminal:
    plain lines only, none after the start-up."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.text import Text

    console = Console(highlight=False)
    startup = _StartUp(cfg, live)

    def say(line: str) -> None:
        if live:
            console.print(Text(line))  # above the spinner / live line; Text: a prompt's [brackets] are not markup
        else:
            typer.echo(line)

    def over() -> bool:
        return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    view = None
    if live:  # stderr goes above the line only when it goes to the terminal anyway (not with `2>file`)
        view = Live(console=console, transient=True, refresh_per_second=4, redirect_stderr=sys.stderr.isatty())
    spinner = Spinner("dots")  # one, so that it turns between updates
    with view or nullcontext():
        while not over():
            st = daemon.status()
            for line in startup.news(st):
                say(line)
            if startup.phase == "running":
                break
            if view is not None:
                spinner.update(text=Text(startup.spinner_text()))
                view.update(spinner)
            stop.wait(0.25)
        if over():
            return
        inf = st["inference"]
        say(_line("engine", str(inf.get("engine"))))
        for key in ("engine_note", "engine_error", "interpolator_note"):
            if inf.get(key):
                say(_line("note", inf[key]))
        say("Ctrl-C stops; `fluxrt-cam status` shows fps and timings.")
        while view is not None and not over():
            view.update(Text(_live_line(daemon.status()), no_wrap=True, overflow="ellipsis"))
            stop.wait(0.5)


def _fps(interval_ms: float | None) -> str:
    return f"{1000 / interval_ms:.1f} fps" if interval_ms else "- fps"


def _camera_state(out: dict[str, Any]) -> str:
    """The virtual camera in a word or two."""
    if "sinks" not in out:
        return "-"  # the output process has not reported yet
    cam = out["sinks"].get("virtual_camera")
    if cam is None:
        return "off"
    return str(cam.get("device")) if cam.get("active") else "not available"


def _obs_state(obs: dict[str, Any]) -> str:
    if not obs.get("enabled"):
        return "off"
    if obs.get("connected"):
        return "connected" + (f" ({obs['scene']})" if obs.get("scene") else "")
    return str(obs.get("state") or "not connected")


def _live_line(st: dict[str, Any]) -> str:
    """The one-line status: output fps, engine fps, latency p50, active cells, camera, OBS, mode, prompt."""
    inf, out, s = st["inference"], st["output"], st["settings"]
    phase = _engine_phase(inf)
    active = (inf.get("cache") or {}).get("active_fraction")
    p50 = out.get("latency_p50_ms")
    parts = [
        f"out {_fps(out.get('interval_mean_ms'))}",
        f"engine {inf.get('engine_fps', 0):.1f} fps" if phase == "running" else f"engine: {phase}",
        f"p50 {p50:.0f} ms" if p50 is not None else "p50 -",
        f"active {active:.0%}" if active is not None else "active -",
        f"camera {_camera_state(out)}",
        f"OBS {_obs_state(st.get('obs') or {})}",
    ]
    if s["mode"] != "live":
        parts.append(s["mode"])
    return " | ".join(parts) + f" | {s['prompt']!r}"  # last: the terminal's width cuts the prompt, not the figures


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None,
        engine: Annotated[Optional[str], typer.Option(help="passthrough | flux2 | flux2-tiny | auto")] = None,
        source: Annotated[Optional[str], typer.Option(help="synthetic | webcam | file")] = None,
        prompt: Annotated[Optional[str], typer.Option(help="Starting prompt.")] = None,
        duration: DurationOpt = None, quiet: QuietOpt = False, log_json: LogJsonOpt = False) -> None:
    """Run the daemon: capture -> edit -> interpolate -> virtual camera."""
    flag_names = {"engine.name": "--engine", "source.kind": "--source", "prompt.text": "--prompt"}
    cfg = load(config, set_, flag_names=flag_names, **{"engine.name": engine, "source.kind": source, "prompt.text": prompt})
    _serve(cfg, duration, "FluxRT Camera is running.", quiet, log_json)


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None, duration: DurationOpt = None, quiet: QuietOpt = False,
         log_json: LogJsonOpt = False) -> None:
    """Run the daemon on the synthetic scene with the best available engine (tiny FLUX.2 on CPU)."""
    cfg = load(config, set_, **{"source.kind": "synthetic"})
    _serve(cfg, duration, "FluxRT Camera demo: a synthetic scene edited live.", quiet, log_json)


def _print_table(rows: list[tuple[str, ...]], styles: dict[str, str] | None = None) -> None:
    """Rows as aligned columns (rich), no header or borders; a first cell named in `styles` gets that style.
    Cells are plain text: a prompt with [brackets] is not read as rich markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False, padding=(0, 2, 0, 0))
    for _ in rows[0] if rows else ():
        table.add_column(overflow="fold")
    for row in rows:
        first = Text(row[0], style=(styles or {}).get(row[0], ""))
        table.add_row(first, *(Text(cell) for cell in row[1:]))
    Console(highlight=False).print(table)


def _camera_row(out: dict[str, Any]) -> str:
    """The virtual camera: device, whether frames reach it, and its error (which says the fix)."""
    if "sinks" not in out:
        return "- (the output process has not reported yet)"
    cam = out["sinks"].get("virtual_camera")
    if cam is None:
        return "off (output.virtual_camera = \"off\")"
    device = cam.get("device") or "no device"
    if cam.get("active"):
        return f"{device} active ({cam.get('backend')}, {cam.get('frames', 0)} frames)"
    return f"{device} not active" + (f", error: {cam['error']}" if cam.get("error") else "")


def _obs_row(obs: dict[str, Any]) -> str:
    """The OBS bridge: connected or not, the current program scene, its last error."""
    if not obs.get("enabled"):
        return "off (obs.enabled = false)"
    text = f"connected to {obs.get('url')}" if obs.get("connected") else f"not connected ({obs.get('state') or '?'})"
    text += f", scene {obs['scene']!r}" if obs.get("scene") else ", scene -"
    return text + (f", last error: {obs['last_error']}" if obs.get("last_error") else "")


@app.command()
def status(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
           url: Annotated[Optional[str], typer.Option(help="Daemon URL (default: from the config).")] = None) -> None:
    """Show a running daemon's state: prompt, engine, fps, per-stage timings, virtual camera, OBS, errors."""
    st = _control_call(load(config, set_), url, lambda c: c.status())
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    d = st.get("daemon", st)
    s, inf, out = d["settings"], d.get("inference", {}), d.get("output", {})
    phase = inf.get("phase")
    rows = [
        ("prompt", f"{s['prompt']!r} (version {s['prompt_version']}, preset {s['preset'] or '-'}, mode {s['mode']})"),
        ("engine", f"{inf.get('engine', '?')}  {inf.get('engine_fps', 0):.1f} fps  stages "
         + ", ".join(f"{k} {v:.1f} ms" for k, v in (inf.get("stages_ms") or {}).items())
         + (f"  ({phase})" if phase and phase != "running" else "")),
        ("interp", f"{inf.get('interpolator') or 'none'} x{inf.get('factor', 1)}"
         + (f", {inf['interp_errors']} groups failed (blended)" if inf.get("interp_errors") else "")
         + (f"  ({inf['interpolator_note']})" if inf.get("interpolator_note") else "")),
        ("output", f"showing {out.get('showing', '?')}, {out.get('sent', 0)} frames sent, "
         f"latency p50 {out.get('latency_p50_ms') or 0:.1f} ms"),
        ("camera", _camera_row(out)),
        ("stream", f"{d.get('stream_url') or '-'}"),
        ("obs", _obs_row(d.get("obs") or {})),
    ]
    for role in ("inference", "output"):
        c = d.get(role, {})
        if c.get("last_error"):
            rows.append((role, f"restarted {c.get('restarts', 0)}x, last error: {c['last_error']}"))
    for note in (inf.get("engine_note"), inf.get("engine_error")):
        if note:
            rows.append(("note", note))
    _print_table(rows)


@app.command()
def doctor(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Check Python, torch/CUDA, models, v4l2loopback, OBS: one row each with the fix. Exits 1 when a row
    fails (warnings do not), so scripts and CI can use it."""
    from dataclasses import asdict

    from vcam.tools.doctor import run_checks

    rows = run_checks(load(config, set_))
    problems = sum(r.status == "FAIL" for r in rows)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        _print_table([(r.status, r.name, r.detail + (f"\nfix: {r.fix}" if r.fix else "")) for r in rows],
                     styles={"OK": "green", "WARN": "yellow", "FAIL": "bold red"})
        typer.echo(f"{problems} problem(s) found." if problems else "All checks passed.")
    if problems:
        raise typer.Exit(1)


@app.command("setup-vcam")
def setup_vcam(config: ConfigOpt = None, set_: SetOpt = None,
               apply: Annotated[bool, typer.Option("--apply", help="Run the command (with sudo unless root).")] = False) -> None:
    """Print (or run with --apply) the modprobe line that creates the "FluxRT Camera" device."""
    import os
    import shlex
    import subprocess

    from vcam.output.sinks.virtualcam import modprobe_command

    cfg = load(config, set_)
    command = modprobe_command(cfg.output.camera_label)
    typer.echo(command)
    if not apply:
        return
    argv = shlex.split(command)
    if os.geteuid() == 0:
        argv = argv[1:]  # no sudo needed
    try:
        result = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError as e:
        _fail([f"cannot run {e.filename!r}: not installed on this machine",
               "install kmod and the module: sudo apt install kmod v4l2loopback-dkms"], code=1)
    if result.returncode != 0:
        _fail([f"modprobe failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}",
               "install the module first: sudo apt install v4l2loopback-dkms (Debian/Ubuntu); "
               "containers and some cloud machines cannot load kernel modules"], code=1)
    typer.echo("virtual camera device created.")


# ---- engine / models commands (engine.flux2, vcam.tools.models) ---------------------------------------
ModelsDirOpt = Annotated[Optional[Path], typer.Option("--models-dir", help="Folder for weights (default: engine.models_dir).")]


@models_app.command("download")
def models_download(
    name: Annotated[str, typer.Argument(help="klein-4b (Apache-2.0) | klein-9b, klein-9b-kv (FLUX non-commercial "
                                             "licence) | taef2 | rife")],
    config: ConfigOpt = None, set_: SetOpt = None, models_dir: ModelsDirOpt = None,
) -> None:
    """Download weights into the models folder, with progress bars."""
    from vcam.tools.models import LICENCES, NAMES, ModelDownloadError, download

    if name not in NAMES:
        _fail([f"unknown model {name!r}; choose one of {', '.join(NAMES)}"])
    folder = models_dir or load(config, set_).engine.models_dir
    typer.echo(f"{name}: licence {LICENCES[name]}; downloading into {Path(folder).expanduser()}")
    try:
        path = download(name, Path(folder))
    except ModelDownloadError as e:
        _fail([str(e)], code=1)
    typer.echo(f"{name}: ready in {path}")


@models_app.command("list")
def models_list(config: ConfigOpt = None, set_: SetOpt = None, models_dir: ModelsDirOpt = None,
                as_json: JsonOpt = False) -> None:
    """What is in the models folder, and the command that fetches what is missing."""
    from dataclasses import asdict

    from vcam.tools.models import inventory

    folder = Path(models_dir or load(config, set_).engine.models_dir).expanduser()
    rows = inventory(folder)
    lines = [f"models in {folder}:"] + [
        f"  {'ok ' if r.ok else '-- '} {r.name:<12} {r.detail}" + (f"\n       fix: {r.fix}" if r.fix else "") for r in rows]
    emit({"models_dir": str(folder), "models": [asdict(r) for r in rows]}, as_json, "\n".join(lines))

# ---- control commands (vcam.control) -------------------------------------------------------------
UrlOpt = Annotated[Optional[str], typer.Option("--url", help="Daemon URL (default: from the config's [control]).")]


def _control_call(cfg: Config, url: str | None, call: Any) -> dict[str, Any]:
    """Run `call(client)` against the daemon; a missing daemon or a refused request exits 1 with the reason."""
    from vcam.control.client import ControlRequestError, DaemonUnavailable, client_for
    from vcam.control.token import TokenError

    try:
        with client_for(cfg.control, url) as client:
            return call(client)
    except (DaemonUnavailable, ControlRequestError, TokenError) as e:
        _fail([str(e)], code=1)
    raise AssertionError  # unreachable


def _show_settings(s: dict[str, Any], as_json: bool) -> None:
    emit(s, as_json, f"prompt {s['prompt']!r} (version {s['prompt_version']}, preset {s['preset'] or '-'})")


@app.command("prompt")
def prompt_cmd(text: Annotated[str, typer.Argument(help="The new prompt.")], config: ConfigOpt = None,
               set_: SetOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Set a running daemon's prompt."""
    _show_settings(_control_call(load(config, set_), url, lambda c: c.set_prompt(text)), as_json)


@app.command("preset")
def preset_cmd(ref: Annotated[str, typer.Argument(metavar="NAME|N|next|prev",
                                                  help="A preset name, its number (1 = first), next or prev.")],
               config: ConfigOpt = None, set_: SetOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Apply one of a running daemon's presets (numbers count from 1, as everywhere: API, hotkeys, web page)."""
    target: str | int = ref
    if ref.isdigit():
        if int(ref) < 1:
            _fail([f"preset {ref} out of range: presets are numbered from 1"])
        target = int(ref)
    _show_settings(_control_call(load(config, set_), url, lambda c: c.apply_preset(target)), as_json)


@app.command("presets")
def presets_cmd(config: ConfigOpt = None, set_: SetOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List a running daemon's presets."""
    r = _control_call(load(config, set_), url, lambda c: c.presets())
    rows = [f"{'*' if p['name'] == r['current'] else ' '} {p['index']}. {p['name']}: {p['prompt']}"  # index: 1 = first
            for p in r["presets"]]
    emit(r, as_json, "\n".join(rows) or "no presets configured")


@app.command("token")
def token_cmd(config: ConfigOpt = None, set_: SetOpt = None,
              rotate: Annotated[bool, typer.Option("--rotate", help="Replace the token with a new one.")] = False) -> None:
    """Print the control API token (created on first use, mode 0600); needed when control.host is not loopback."""
    from vcam.control.token import TokenError, create_token, ensure_token, token_path

    path = token_path(load(config, set_).control.token_file)
    try:
        token, created = (create_token(path, replace=True), True) if rotate else ensure_token(path)
    except (TokenError, OSError) as e:
        _fail([f"token file {path}: {e}"], code=1)
    typer.echo(f"{'new token written to' if created else 'token from'} {path} (clients send it as "
               f"`Authorization: Bearer <token>`):", err=True)
    typer.echo(token)


@app.command("obs-script")
def obs_script_cmd() -> None:
    """Print the path of the OBS script to add in OBS under Tools -> Scripts."""
    from importlib import resources

    typer.echo(resources.files("obs_scripts").joinpath("fluxrt_presets.py"))


@app.command("hotkeys")
def hotkeys_cmd(config: ConfigOpt = None, set_: SetOpt = None, url: UrlOpt = None) -> None:
    """Global hotkeys: ctrl+alt+1..9 apply presets 1..9, ctrl+alt+n / ctrl+alt+p next / previous (needs a desktop)."""
    from vcam.control.client import ControlRequestError, DaemonUnavailable, client_for
    from vcam.control.hotkeys import GlobalHotkeys, HotkeysUnavailable, bindings
    from vcam.control.token import TokenError

    cfg = load(config, set_)
    try:
        client = client_for(cfg.control, url)
        client.presets()  # a missing daemon or token is reported now, not at the first key press
        keys = GlobalHotkeys(client, report=typer.echo).start()
    except (HotkeysUnavailable, TokenError, DaemonUnavailable, ControlRequestError) as e:
        _fail([str(e)], code=1)
    typer.echo(f"listening for {', '.join(bindings())} -> {client.url}; Ctrl-C stops")
    try:
        keys.join()
    except KeyboardInterrupt:
        keys.stop()


# ---- OBS scene setup and login service (vcam.obs.setup, vcam.tools.service) ------------------------


@app.command("obs-setup")
def obs_setup_cmd(config: ConfigOpt = None, set_: SetOpt = None,
                  scene: Annotated[Optional[str], typer.Option("--scene", help="OBS scene (default: the current one).")] = None) -> None:
    """Add the daemon's stream to an OBS scene as a Media Source "FluxRT Camera" (no camera device needed);
    also the prompt text source when obs.prompt_text_source is set. Running it again updates, never duplicates."""
    from vcam.obs.setup import CAMERA_SOURCE, ObsSetupError, setup_obs

    cfg = load(config, set_)
    try:
        r = setup_obs(cfg, scene)
    except ObsSetupError as e:
        _fail([str(e)], code=1)
    typer.echo(f"OBS scene {r.scene!r}: Media Source {CAMERA_SOURCE!r} {r.camera}, playing {r.url_shown}, "
               f"fitted to the {r.canvas[0]}x{r.canvas[1]} canvas")
    if r.text is not None:
        typer.echo(f"OBS scene {r.scene!r}: text source {cfg.obs.prompt_text_source!r} {r.text} "
                   f"(the daemon's OBS bridge keeps it showing the prompt)")
    for note in r.notes:
        typer.echo(f"note: {note}", err=True)


@app.command("install-service")
def install_service_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Config file the service runs with "
                                                   "(default: <user config dir>/fluxrt/config.toml, created empty).")] = None,
    print_: Annotated[bool, typer.Option("--print", help="Print the unit; write nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a different existing unit.")] = False,
    enable: Annotated[bool, typer.Option("--enable", help="Also run systemctl --user daemon-reload and enable --now.")] = False,
    platform: Annotated[Optional[str], typer.Option("--platform", help="linux | windows | macos (default: this "
                                                    "machine's); windows and macos print their autostart steps.")] = None,
) -> None:
    """Start the daemon at login: a systemd user unit on Linux; Task Scheduler / launchd steps on Windows / macOS."""
    from vcam.tools.service import ServiceError, install

    try:
        typer.echo(install(config, print_only=print_, force=force, enable_now=enable, platform=platform), nl=False)
    except (ServiceError, OSError) as e:
        _fail([str(e)], code=1)


# ---- benchmarks ----------------------------------------------------------------------------------
BenchQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar on stderr.")]
PlotOpt = Annotated[Optional[Path], typer.Option("--plot", metavar="FILE.png", help="Also draw the result into this PNG.")]


def _plots_for(path: Path | None) -> Any:
    """The plotting module when --plot is given (matplotlib loads only then), once the PNG is known to be
    writable: a wrong path fails now, not after the benchmark."""
    if path is None:
        return None
    if path.suffix.lower() != ".png":
        _fail([f"--plot {path}: the figure is a PNG, name it FILE.png"])
    if not path.expanduser().parent.is_dir():
        _fail([f"--plot {path}: the folder {path.expanduser().parent} does not exist"])
    from vcam.tools.bench import plots

    return plots


def _plot(draw: Any, path: Path, quiet: bool) -> None:
    """Draw after the result is out (a plot that fails loses no measurement); the note goes to stderr."""
    try:
        draw(path.expanduser())
    except (ValueError, OSError) as e:
        _fail([f"--plot {path}: {e}"], code=1)
    if not quiet:
        typer.echo(f"plot: {path}", err=True)


@bench_app.command("engine")
def bench_engine(
    config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False, quiet: BenchQuietOpt = False,
    frames: Annotated[int, typer.Option(help="Timed frames (after warm-up).", min=1)] = 3,
    warmup: Annotated[int, typer.Option(help="Warm-up frames (text encoding, allocations).", min=0)] = 1,
    tiny_preset: Annotated[Optional[str], typer.Option(help="flux2-tiny size: test | demo | bench.")] = None,
) -> None:
    """Per-stage ms and frames/s of the configured engine on this device (flux2-tiny on a CPU)."""
    from engine.errors import EngineConfigError
    from vcam.tools.bench import BenchProgress
    from vcam.tools.bench.engine import run, table

    cfg = load(config, set_)
    notes: list[str] = []
    try:
        with BenchProgress(not quiet) as progress:
            result = run(cfg, frames_n=frames, warmup=warmup, tiny_preset=tiny_preset, notes=notes, progress=progress)
    except EngineConfigError as e:
        _fail([str(e)])
    emit(result, as_json, table(result, notes))


@bench_app.command("pipeline")
def bench_pipeline(as_json: JsonOpt = False, quiet: BenchQuietOpt = False, plot: PlotOpt = None,
                   seconds: Annotated[float, typer.Option(help="Steady-state seconds per resolution.")] = 5.0,
                   pacing_seconds: Annotated[float, typer.Option(help="Seconds of the pacing run.")] = 10.0) -> None:
    """Daemon overhead: latency, channel throughput, jitter, idle CPU, interpolation pacing
    (--plot: a histogram of each frame's capture -> camera latency)."""
    from vcam.tools.bench import BenchProgress
    from vcam.tools.bench.pipeline import format_table, run_bench

    plots = _plots_for(plot)
    samples: dict[str, list[float]] = {}
    with BenchProgress(not quiet) as progress:
        result = run_bench(seconds=seconds, pacing_seconds=pacing_seconds, progress=progress, latency_samples=samples)
    emit(result, as_json, format_table(result))
    if plot is not None:
        _plot(lambda path: plots.pipeline_figure(result, samples, path), plot, quiet)


@bench_app.command("cache")
def bench_cache(as_json: JsonOpt = False, quiet: BenchQuietOpt = False, plot: PlotOpt = None,
                full: Annotated[bool, typer.Option("--full", help="The long run: 8 heads, 6 active fractions, median "
                                                                  "of 3 (about 5x the default's work).")] = False,
                width: Annotated[Optional[int], typer.Option(help="Frame width, multiple of 16, default 512.")] = None,
                height: Annotated[Optional[int], typer.Option(help="Frame height, multiple of 16, default 512.")] = None,
                text_tokens: Annotated[Optional[int], typer.Option(help="Text tokens (klein: 512), default 512.")] = None,
                heads: Annotated[Optional[int], typer.Option(help="Attention heads of 128 (klein-4B: 24), default 4, "
                                                                  "--full 8.")] = None,
                double_blocks: Annotated[Optional[int], typer.Option(help="Double-stream blocks (klein-4B: 5), "
                                                                          "default 1.")] = None,
                single_blocks: Annotated[Optional[int], typer.Option(help="Single-stream blocks (klein-4B: 20), "
                                                                          "default 1.")] = None,
                repeats: Annotated[Optional[int], typer.Option(help="Timed runs per row (median), default 2, --full 3.",
                                                               min=1)] = None,
                device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu") -> None:
    """Spatial cache: dense vs cached transformer at active fractions 0..1 (time, FLOPs, PSNR); --plot: speedup
    and FLOP ratio against the active fraction."""
    from vcam.tools.bench import BenchProgress
    from vcam.tools.bench.cache import format_table, mode_settings, run_cache_bench

    try:
        mode, s = mode_settings(full, repeats=repeats, width=width, height=height, text_tokens=text_tokens,
                                heads=heads, double_blocks=double_blocks, single_blocks=single_blocks)
    except ValueError as e:
        _fail([str(e)])
    plots = _plots_for(plot)
    with BenchProgress(not quiet) as progress:
        result = run_cache_bench(s.shape, fractions=s.fractions, repeats=s.repeats, device=device, mode=mode,
                                 progress=progress)
    emit(result, as_json, format_table(result))
    if plot is not None:
        _plot(lambda path: plots.cache_figure(result, path), plot, quiet)


@bench_app.command("interp")
def bench_interp(
    config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False, quiet: BenchQuietOpt = False,
    plot: PlotOpt = None,
    size: Annotated[int, typer.Option(help="Square frame size in pixels.", min=32, max=2048)] = 512,
    cases: Annotated[Optional[int], typer.Option(help="Use the first N non-periodic motion cases (default: all).", min=1)] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: rife-v4.25,rife-v3-hd,flow,blend.")] = "rife-v4.25,rife-v3-hd,flow,blend",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """ms per interpolated frame and PSNR on the synthetic motion set, per interpolator (weights from engine.models_dir or ../shared/models); --plot: PSNR against ms per method."""
    from vcam.tools.bench import BenchProgress
    from vcam.tools.bench.interp import METHODS, format_table, run

    cfg = load(config, set_)
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        _fail([f"--methods: unknown {unknown or chosen}; choose from {', '.join(METHODS)}"])
    plots = _plots_for(plot)
    try:
        with BenchProgress(not quiet) as progress:
            result = run(size=size, methods=chosen, cases=cases, device=device, models_dir=cfg.engine.models_dir,
                         progress=progress)
    except ValueError as e:
        _fail([str(e)])
    emit(result, as_json, format_table(result))
    if plot is not None:
        _plot(lambda path: plots.interp_figure(result, path), plot, quiet)


@bench_app.command("stream")
def bench_stream(as_json: JsonOpt = False,
                 viewers: Annotated[int, typer.Option(help="Viewers of /stream.mjpg (one slow viewer more).", min=1, max=1000)] = 200,
                 seconds: Annotated[float, typer.Option(help="Measured seconds.", min=0.5, max=300)] = 10.0,
                 width: Annotated[int, typer.Option(help="Picture width.", min=16, max=4096)] = 512,
                 height: Annotated[int, typer.Option(help="Picture height.", min=16, max=4096)] = 512,
                 quality: Annotated[int, typer.Option(help="JPEG quality.", min=1, max=100)] = 80) -> None:
    """Preview fan-out: per-viewer fps with many viewers, encodes per picture, a slow viewer, `watchers`."""
    from vcam.tools.bench.stream import format_table, run_bench

    result = run_bench(viewers=viewers, seconds=seconds, width=width, height=height, quality=quality)
    emit(result, as_json, format_table(result))


@bench_app.command("soak")
def bench_soak(as_json: JsonOpt = False,
               minutes: Annotated[float, typer.Option(
                   help="Minutes of load after start-up. The default 0.4 keeps the whole run (start-up ~20 s, the "
                        "load, the killed child's return, stop) under a minute on 2 CPU cores; a real soak: 30.",
                   min=0.1, max=24 * 60)] = 0.4,
               engine: Annotated[str, typer.Option(help="flux2-tiny (the CPU demo model) | passthrough (cheaper) | "
                                                        "flux2 | auto.")] = "flux2-tiny",
               viewers: Annotated[int, typer.Option(help="Viewers of /stream.mjpg.", min=0, max=100)] = 3,
               width: Annotated[int, typer.Option(help="Frame width (multiple of 16).", min=16, max=4096)] = 256,
               height: Annotated[int, typer.Option(help="Frame height (multiple of 16).", min=16, max=4096)] = 256) -> None:
    """The real daemon under viewers, a prompt change a second and a kill -9 a minute: RSS, open files and
    threads growth, camera interval p50/p99, restarts, lost frames."""
    from vcam.tools.bench.soak import format_table, live_progress, run_soak, show_progress

    try:
        with live_progress(show_progress(as_json)) as progress:
            result = run_soak(minutes=minutes, engine=engine, viewers=viewers, width=width, height=height,
                              progress=progress)
    except ConfigError as e:
        _fail(e.lines)
    except ValueError as e:
        _fail([str(e)])
    emit(result, as_json, format_table(result))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
