"""FluxRT Camera presets: OBS hotkeys and a prompt box that drive a running FluxRT Camera daemon.

Add it in OBS with Tools -> Scripts -> "+" (OBS needs Python 3 configured under the "Python Settings"
tab; on Linux OBS uses the system Python). Standard library only.

Hotkeys (Settings -> Hotkeys, "FluxRT: ..."):
  FluxRT: preset slot 1 .. 9   apply the daemon's preset number 1 .. 9 (in the order of the config's
                               [[presets]]; "Fetch presets" lists which preset each slot holds)
  FluxRT: next / previous preset
OBS registers hotkeys once, when the script loads, before any preset could be fetched, and keeps their
bindings under fixed names; so the script registers a fixed number of slots rather than one hotkey per
preset name. Slot i always means "the i-th preset", bindings survive restarts (obs_hotkey_save/load in
script_save/script_load), and a preset list that changes later needs no re-registration.

Every HTTP request runs on one worker thread: a hotkey press or a button only queues work, so OBS never
waits on the network. A missing daemon is a logged warning (View -> Log Files / the script log), never
an error dialog. Log lines are written from OBS's own thread (a timer drains the worker's messages).
"""
import json
import queue
import threading
import urllib.error
import urllib.request

import obspython as obs

SLOTS = 9
DEFAULT_URL = "http://127.0.0.1:8766"
_TIMEOUT_S = 3.0
# slot i applies the daemon's preset number i (the API counts from 1, as the slots do)
_HOTKEYS = [(f"fluxrt.preset.{i}", f"FluxRT: preset slot {i}", ("POST", "/api/presets/apply", {"preset": i}))
            for i in range(1, SLOTS + 1)]
_HOTKEYS += [("fluxrt.next", "FluxRT: next preset", ("POST", "/api/presets/next", None)),
             ("fluxrt.prev", "FluxRT: previous preset", ("POST", "/api/presets/prev", None))]


class _Client:
    """One worker thread doing the script's HTTP; results come back as log lines."""

    def __init__(self):
        self.url = DEFAULT_URL
        self.token = ""
        self.presets = []  # names, as last fetched
        self.logs = queue.Queue()  # (level, message) for OBS's thread
        self._jobs = queue.Queue()
        self._down = False  # the daemon was unreachable last time: warn once per outage
        # no proxies: the daemon is on this machine or the LAN, and a desktop proxy would swallow it
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._thread = threading.Thread(target=self._work, name="fluxrt-presets", daemon=True)
        self._thread.start()

    def submit(self, method, path, body=None, what=""):
        self._jobs.put((method, path, body, what))

    def close(self):
        self._jobs.put(None)
        self._thread.join(1.0)

    def _log(self, level, msg):
        self.logs.put((level, msg))

    def _work(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            method, path, body, what = job
            try:
                result = self._request(method, path, body)
            except urllib.error.HTTPError as e:
                self._log(obs.LOG_WARNING, f"FluxRT: {what or path} refused: {self._detail(e)}")
                continue
            except (urllib.error.URLError, OSError, ValueError) as e:
                if not self._down:
                    reason = getattr(e, "reason", e)
                    self._log(obs.LOG_WARNING, f"FluxRT: no daemon at {self.url} ({reason}); start it with "
                                               f"`fluxrt-cam run` or fix the daemon URL in the script's settings")
                self._down = True
                continue
            if self._down:
                self._log(obs.LOG_INFO, f"FluxRT: daemon at {self.url} is back")
            self._down = False
            self._done(path, result, what)

    def _request(self, method, path, body):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        with self._opener.open(req, timeout=_TIMEOUT_S) as r:
            return json.loads(r.read().decode() or "{}")

    def _detail(self, err):
        if err.code == 401:
            return "the daemon needs its token: paste the output of `fluxrt-cam token` into the Token field"
        try:
            return json.loads(err.read().decode()).get("detail", err.reason)
        except (ValueError, OSError):
            return f"HTTP {err.code} {err.reason}"

    def _done(self, path, result, what):
        if path == "/api/presets":
            self.presets = [p.get("name", "?") for p in result.get("presets", [])]
            slots = ", ".join(f"{i + 1}={n}" for i, n in enumerate(self.presets[:SLOTS])) or "(no presets configured)"
            extra = f" (presets beyond {SLOTS} are reached with next/previous)" if len(self.presets) > SLOTS else ""
            self._log(obs.LOG_INFO, f"FluxRT: preset slots {slots}{extra}")
        elif what:
            self._log(obs.LOG_INFO, f"FluxRT: {what} -> {result.get('preset') or 'prompt'} "
                                    f"(prompt_version {result.get('prompt_version')})")


class _Script:
    """Everything the script holds between OBS's calls (OBS calls module-level functions, so one instance
    lives in `_script` from script_load to script_unload)."""

    def __init__(self):
        self.client = _Client()
        self.prompt = ""
        self.hotkeys = {}  # name -> hotkey id
        self.callbacks = []  # OBS keeps only a borrowed reference

    def register_hotkeys(self, settings):
        for name, label, (method, path, body) in _HOTKEYS:
            def on_key(pressed, method=method, path=path, body=body, label=label):
                if pressed:  # the callback also fires on release
                    self.client.submit(method, path, body, what=label.split(": ", 1)[1])
            self.callbacks.append(on_key)
            hid = obs.obs_hotkey_register_frontend(name, label, on_key)
            saved = obs.obs_data_get_array(settings, name)
            obs.obs_hotkey_load(hid, saved)
            obs.obs_data_array_release(saved)
            self.hotkeys[name] = hid

    def save_hotkeys(self, settings):
        for name, hid in self.hotkeys.items():
            arr = obs.obs_hotkey_save(hid)
            obs.obs_data_set_array(settings, name, arr)
            obs.obs_data_array_release(arr)

    def flush_logs(self):
        while True:
            try:
                level, msg = self.client.logs.get_nowait()
            except queue.Empty:
                return
            obs.script_log(level, msg)

    def close(self):
        for hid in self.hotkeys.values():
            obs.obs_hotkey_unregister(hid)
        self.hotkeys.clear()
        self.client.close()


_script = None


def _flush():
    if _script is not None:
        _script.flush_logs()


def script_description():
    return ("<b>FluxRT Camera presets</b><br>Hotkeys for the daemon's presets (slots 1-9 = presets 1-9 in "
            "config order, plus next/previous) and a box to send any prompt. Needs a running "
            "<code>fluxrt-cam run</code>.")


def script_defaults(settings):
    obs.obs_data_set_default_string(settings, "url", DEFAULT_URL)
    obs.obs_data_set_default_string(settings, "token", "")
    obs.obs_data_set_default_string(settings, "prompt", "")


def _on_fetch(props, prop):
    if _script is not None:
        _script.client.submit("GET", "/api/presets", what="")
    return False


def _on_send(props, prop):
    if _script is not None:
        text = _script.prompt.strip()
        if not text:
            obs.script_log(obs.LOG_WARNING, "FluxRT: the prompt box is empty")
        else:
            _script.client.submit("PUT", "/api/prompt", {"prompt": text}, what="prompt")
    return False


def script_properties():
    props = obs.obs_properties_create()
    obs.obs_properties_add_text(props, "url", "Daemon URL", obs.OBS_TEXT_DEFAULT)
    obs.obs_properties_add_text(props, "token", "Token (if the daemon needs one)", obs.OBS_TEXT_PASSWORD)
    obs.obs_properties_add_button(props, "fetch", "Fetch presets", _on_fetch)
    names = _script.client.presets if _script is not None else []
    listing = ", ".join(f"{i + 1}={n}" for i, n in enumerate(names[:SLOTS])) or "press Fetch presets"
    obs.obs_properties_add_text(props, "slots_info", f"Hotkey slots: {listing}", obs.OBS_TEXT_INFO)
    obs.obs_properties_add_text(props, "prompt", "Prompt", obs.OBS_TEXT_MULTILINE)
    obs.obs_properties_add_button(props, "send", "Send prompt", _on_send)
    return props


def _read(settings):
    _script.client.url = obs.obs_data_get_string(settings, "url").strip() or DEFAULT_URL
    _script.client.token = obs.obs_data_get_string(settings, "token").strip()
    _script.prompt = obs.obs_data_get_string(settings, "prompt")


def script_update(settings):
    if _script is not None:
        old = (_script.client.url, _script.client.token)
        _read(settings)
        if (_script.client.url, _script.client.token) != old:
            _script.client.submit("GET", "/api/presets")


def script_load(settings):
    global _script
    _script = _Script()
    _read(settings)
    _script.register_hotkeys(settings)
    obs.timer_add(_flush, 200)
    _script.client.submit("GET", "/api/presets")


def script_save(settings):
    if _script is not None:
        _script.save_hotkeys(settings)


def script_unload():
    global _script
    obs.timer_remove(_flush)
    if _script is not None:
        _script.flush_logs()
        _script.close()
        _script = None
