"""`fluxrt-cam` command line. Each command is a thin wrapper over a module that does the work."""
from __future__ import annotations

import json
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
DurationOpt = Annotated[Optional[float], typer.Option("--duration", help="Stop after this many seconds (default: until Ctrl-C).")]


def _serve(cfg: Config, duration: float | None, banner: str) -> None:
    """Start the daemon, say where to look, run until Ctrl-C / SIGTERM / duration, stop cleanly."""
    import logging
    import time
    from datetime import datetime

    import threading

    from vcam.instance_lock import AlreadyRunning, InstanceLock

    # one daemon per user, refused before anything heavy is imported or started
    c = cfg.control
    try:
        lock = InstanceLock().acquire(control_url=f"http://{c.host}:{c.port}" if c.enabled else None,
                                      started=datetime.now().isoformat(timespec="seconds"))
    except AlreadyRunning as e:
        _fail([str(e)], code=1)
    from vcam.control.server import ApiStartError, bind_socket

    if c.enabled and c.port:  # a port taken by another program: say so now, not after the engine starts
        try:
            bind_socket(c.host, c.port).close()
        except ApiStartError as e:
            _fail([str(e)])
    from vcam.daemon import Daemon, stop_on_signals
    from vcam.shm import ChannelError

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    stop_on_signals(stop)  # from the first moment: a signal during start-up still stops cleanly
    daemon = Daemon(cfg)
    try:
        daemon.start()
    except (ApiStartError, ChannelError) as e:
        _fail([str(e)])
    if daemon.api is not None:
        lock.update(control_url=daemon.api.url)  # the real port (control.port = 0 picks one)
    typer.echo(banner)
    # the children report within a second; wait for the output's first report and the engine's first words
    deadline = time.monotonic() + 5
    st = daemon.status()
    while time.monotonic() < deadline and not stop.is_set() and "sinks" not in st["output"]:
        time.sleep(0.1)
        st = daemon.status()
    if st["control_url"]:
        what = "controls and the live picture" if st["stream_url"] else "controls"
        typer.echo(f"  page:           {st['control_url']}/  ({what}; `fluxrt-cam prompt \"...\"` from a shell)")
    if st["stream_url"]:
        typer.echo(f"  stream:         {st['stream_url']}  (MJPEG: a browser, VLC or an OBS media source)")
    elif cfg.output.preview and not cfg.control.enabled:
        typer.echo("  stream:         off (the control server serves it; control.enabled = false)")
    cam = (st["output"].get("sinks") or {}).get("virtual_camera")
    if cfg.output.virtual_camera == "off":
        typer.echo("  virtual camera: off (output.virtual_camera = \"off\")")
    elif cam and cam.get("active"):
        typer.echo(f"  virtual camera: {cfg.output.camera_label!r} on {cam.get('device')} - pick it in Zoom/Meet/OBS")
    elif cam and cam.get("error"):
        typer.echo(f"  virtual camera: not available - {cam['error']}")
    typer.echo(f"  prompt:         {st['settings']['prompt']!r}")
    _wait_for_engine(daemon, stop)
    typer.echo("Ctrl-C stops; `fluxrt-cam status` shows fps and timings.")
    daemon.run_forever(duration, stop)
    typer.echo("stopped.")


def _wait_for_engine(daemon: Any, stop: Any, timeout: float = 600) -> None:
    """Show a spinner while the inference process builds its engine (the first tiny-model build and
    large weights take a while), then say which engine runs and why."""
    import time

    from rich.console import Console

    deadline = time.monotonic() + timeout
    with Console(stderr=True).status("building the engine..."):
        while not stop.is_set() and time.monotonic() < deadline:
            inf = daemon.status()["inference"]
            if inf.get("phase") == "running":
                break
            time.sleep(0.2)
    inf = daemon.status()["inference"]
    if inf.get("phase") != "running":
        typer.echo("  engine:         still starting (see `fluxrt-cam status`)")
        return
    typer.echo(f"  engine:         {inf.get('engine')}")
    for key in ("engine_note", "engine_error", "interpolator_note"):
        if inf.get(key):
            typer.echo(f"  note:           {inf[key]}")


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None,
        engine: Annotated[Optional[str], typer.Option(help="passthrough | flux2 | flux2-tiny | auto")] = None,
        source: Annotated[Optional[str], typer.Option(help="synthetic | webcam | file")] = None,
        prompt: Annotated[Optional[str], typer.Option(help="Starting prompt.")] = None,
        duration: DurationOpt = None) -> None:
    """Run the daemon: capture -> edit -> interpolate -> virtual camera."""
    cfg = load(config, set_, **{"engine.name": engine, "source.kind": source, "prompt.text": prompt})
    _serve(cfg, duration, "FluxRT Camera is running.")


@app.command()
def demo(config: ConfigOpt = None, set_: SetOpt = None, duration: DurationOpt = None) -> None:
    """Run the daemon on the synthetic scene with the best available engine (tiny FLUX.2 on CPU)."""
    cfg = load(config, set_, **{"source.kind": "synthetic"})
    _serve(cfg, duration, "FluxRT Camera demo: a synthetic scene edited live.")


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


@app.command()
def status(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
           url: Annotated[Optional[str], typer.Option(help="Daemon URL (default: from the config).")] = None) -> None:
    """Show a running daemon's state: prompt, engine, fps, per-stage timings, errors."""
    st = _control_call(load(config, set_), url, lambda c: c.status())
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    d = st.get("daemon", st)
    s, inf, out = d["settings"], d.get("inference", {}), d.get("output", {})
    rows = [
        ("prompt", f"{s['prompt']!r} (version {s['prompt_version']}, preset {s['preset'] or '-'}, mode {s['mode']})"),
        ("engine", f"{inf.get('engine', '?')}  {inf.get('engine_fps', 0):.1f} fps  stages "
         + ", ".join(f"{k} {v:.1f} ms" for k, v in (inf.get("stages_ms") or {}).items())),
        ("interp", f"{inf.get('interpolator') or 'none'} x{inf.get('factor', 1)}"
         + (f", {inf['interp_errors']} groups failed (blended)" if inf.get("interp_errors") else "")
         + (f"  ({inf['interpolator_note']})" if inf.get("interpolator_note") else "")),
        ("output", f"showing {out.get('showing', '?')}, {out.get('sent', 0)} frames sent, "
         f"latency p50 {out.get('latency_p50_ms') or 0:.1f} ms"),
        ("stream", f"{d.get('stream_url') or '-'}"),
    ]
    obs = d.get("obs") or {}
    if obs.get("enabled", True) and obs:
        rows.append(("obs", ("connected" if obs.get("connected") else "not connected")
                     + (f", last error: {obs['last_error']}" if obs.get("last_error") else "")))
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
    """Check Python, torch/CUDA, models, v4l2loopback, OBS: one row each with the fix."""
    from dataclasses import asdict

    from vcam.tools.doctor import run_checks

    rows = run_checks(load(config, set_))
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    _print_table([(r.status, r.name, r.detail + (f"\nfix: {r.fix}" if r.fix else "")) for r in rows],
                 styles={"OK": "green", "WARN": "yellow", "FAIL": "bold red"})
    problems = sum(r.status == "FAIL" for r in rows)
    typer.echo(f"{problems} problem(s) found." if problems else "All checks passed.")


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
    """Apply one of a running daemon's presets (numbers count from 1, as on the hotkeys and the web page)."""
    target: str | int = ref
    if ref.isdigit():
        if int(ref) < 1:
            _fail([f"preset number {ref}: numbers start at 1 (the first preset)"])
        target = int(ref) - 1
    _show_settings(_control_call(load(config, set_), url, lambda c: c.apply_preset(target)), as_json)


@app.command("presets")
def presets_cmd(config: ConfigOpt = None, set_: SetOpt = None, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """List a running daemon's presets."""
    r = _control_call(load(config, set_), url, lambda c: c.presets())
    rows = [f"{'*' if p['name'] == r['current'] else ' '} {p['index'] + 1}. {p['name']}: {p['prompt']}" for p in r["presets"]]
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


@bench_app.command("engine")
def bench_engine(
    config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
    frames: Annotated[int, typer.Option(help="Timed frames (after warm-up).", min=1)] = 3,
    warmup: Annotated[int, typer.Option(help="Warm-up frames (text encoding, allocations).", min=0)] = 1,
    tiny_preset: Annotated[Optional[str], typer.Option(help="flux2-tiny size: test | demo | bench.")] = None,
) -> None:
    """Per-stage ms and frames/s of the configured engine on this device (flux2-tiny on a CPU)."""
    from engine.errors import EngineConfigError
    from vcam.tools.bench.engine import run, table

    cfg = load(config, set_)
    notes: list[str] = []
    try:
        result = run(cfg, frames_n=frames, warmup=warmup, tiny_preset=tiny_preset, notes=notes)
    except EngineConfigError as e:
        _fail([str(e)])
    emit(result, as_json, table(result, notes))


@bench_app.command("pipeline")
def bench_pipeline(as_json: JsonOpt = False,
                   seconds: Annotated[float, typer.Option(help="Steady-state seconds per resolution.")] = 5.0,
                   pacing_seconds: Annotated[float, typer.Option(help="Seconds of the pacing run.")] = 10.0) -> None:
    """Daemon overhead: latency, channel throughput, jitter, idle CPU, interpolation pacing."""
    from vcam.tools.bench.pipeline import format_table, run_bench

    result = run_bench(seconds=seconds, pacing_seconds=pacing_seconds)
    emit(result, as_json, format_table(result))


@bench_app.command("cache")
def bench_cache(as_json: JsonOpt = False,
                width: Annotated[int, typer.Option(help="Frame width (multiple of 16).")] = 512,
                height: Annotated[int, typer.Option(help="Frame height (multiple of 16).")] = 512,
                text_tokens: Annotated[int, typer.Option(help="Text tokens (klein: 512).")] = 512,
                heads: Annotated[int, typer.Option(help="Attention heads of 128 (klein-4B: 24).")] = 8,
                double_blocks: Annotated[int, typer.Option(help="Double-stream blocks (klein-4B: 5).")] = 1,
                single_blocks: Annotated[int, typer.Option(help="Single-stream blocks (klein-4B: 20).")] = 1,
                repeats: Annotated[int, typer.Option(help="Timed runs per row (median).")] = 3,
                device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu") -> None:
    """Spatial cache: dense vs cached transformer at active fractions 0..1 (time, FLOPs, PSNR)."""
    from vcam.tools.bench.cache import BenchShape, format_table, run_cache_bench

    try:
        shape = BenchShape(width=width, height=height, text_tokens=text_tokens, heads=heads,
                           double_blocks=double_blocks, single_blocks=single_blocks)
    except ValueError as e:
        _fail([str(e)])
    result = run_cache_bench(shape, repeats=repeats, device=device)
    emit(result, as_json, format_table(result))


@bench_app.command("interp")
def bench_interp(
    config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False,
    size: Annotated[int, typer.Option(help="Square frame size in pixels.", min=32, max=2048)] = 512,
    cases: Annotated[Optional[int], typer.Option(help="Use the first N non-periodic motion cases (default: all).", min=1)] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated: rife-v4.25,rife-v3-hd,flow,blend.")] = "rife-v4.25,rife-v3-hd,flow,blend",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "cpu",
) -> None:
    """ms per interpolated frame and PSNR on the synthetic motion set, per interpolator (weights from engine.models_dir or ../shared/models)."""
    from vcam.tools.bench.interp import METHODS, format_table, run

    cfg = load(config, set_)
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        _fail([f"--methods: unknown {unknown or chosen}; choose from {', '.join(METHODS)}"])
    try:
        result = run(size=size, methods=chosen, cases=cases, device=device, models_dir=cfg.engine.models_dir)
    except ValueError as e:
        _fail([str(e)])
    emit(result, as_json, format_table(result))


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
