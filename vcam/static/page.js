// The control page: everything it shows comes from /api, /ws and the picture routes of the same server.
"use strict";

const $ = (id) => document.getElementById(id);
const WINDOW_S = 300;       // the charts show the last 5 minutes
const SLOW_FPS = 2;         // below this the page explains why the engine is slow
const INPUT_EVERY_MS = 150; // the input view polls /input.jpg: one connection per picture, not one held open
const TAU_SLIDER_MAX = 32;  // the useful part of tau's range (0-255): sensor noise ~3.5, motion ~10

// A token from `/?token=...` is kept for this tab only and taken out of the address bar.
const query = new URLSearchParams(location.search);
if (query.get("token")) {
  sessionStorage.setItem("fluxrt-token", query.get("token"));
  history.replaceState(null, "", location.pathname);
}
let token = sessionStorage.getItem("fluxrt-token") || "";

let presets = [];          // as GET /api/presets lists them
let settings = null;       // the newest settings the daemon sent
let daemon = null;         // the newest status the daemon sent
let samples = [];          // chart points, oldest first
let dirty = false;         // the prompt box holds typed text that was not sent
let seedFrom = null;       // the preset the current seed came from, while the seed stays unchanged
let ws = null;
let retry = null;
let inputLoop = false;
let inputUrl = null;       // the object URL the input view shows

class NeedToken extends Error {}

function say(text, ok) {
  $("msg").textContent = text || "";
  $("msg").className = ok ? "ok" : "";
}

function conn(text, up) {
  $("conn").textContent = text;
  $("conn").className = "conn " + (up ? "up" : "down");
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch("/api" + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  if (r.status === 401) {
    askToken(token ? "That token was refused; paste the current one." : "");
    throw new NeedToken("token required");
  }
  const data = await r.json();
  if (!r.ok) {
    const e = new Error(data.detail || r.statusText);
    e.status = r.status;
    throw e;
  }
  return data;
}

// a change made on the page: the answer is the new settings (or an error, shown at the top)
async function change(method, path, body, done) {
  try {
    const s = await api(method, path, body);
    if (s && s.prompt_version !== undefined) showSettings(s);
    say(done || "", true);
    return true;
  } catch (e) {
    if (!(e instanceof NeedToken)) say(e.message);
    if (settings) showSettings(settings);  // a refused change: the controls show what applies again
    return false;
  }
}

// ---- token ------------------------------------------------------------------------------------------
function askToken(why) {
  $("tokenform").hidden = false;
  conn("token needed", false);
  if (why) say(why);
  $("token").focus();
}

$("tokenform").onsubmit = (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("fluxrt-token", token);
  $("tokenform").hidden = true;
  say("");
  start();
};

function withToken(path, params) {  // for <img>, which cannot send an Authorization header
  const q = new URLSearchParams(params || {});
  if (token) q.set("token", token);
  const s = q.toString();
  return s ? path + "?" + s : path;
}

// ---- settings ---------------------------------------------------------------------------------------
function typing(el) { return document.activeElement === el; }

function setRange(id, value) {
  const el = $(id);
  if (!typing(el)) el.value = value;
  $(id + "-v").textContent = value;
}

function showSettings(s) {
  const before = settings;
  settings = s;
  if (s.preset) seedFrom = s.preset;
  else if (before && before.seed !== s.seed) seedFrom = null;
  if (!dirty) $("prompt").value = s.prompt;
  showPromptNote();
  for (const b of document.querySelectorAll("#presets button")) b.classList.toggle("on", b.dataset.name === s.preset);
  for (const b of document.querySelectorAll("button[data-mode]")) b.classList.toggle("on", b.dataset.mode === s.mode);
  if (s.preset && !presets.some((p) => p.name === s.preset)) loadPresets();  // added elsewhere
  if (!typing($("seed"))) $("seed").value = s.seed;
  const own = presets.find((p) => p.name === seedFrom);
  const fallback = own && own.seed === null ? " (it sets none: the engine's default)" : "";
  $("seednote").textContent = s.preset ? `from preset "${s.preset}"${fallback}`
    : seedFrom ? `kept from preset "${seedFrom}"${fallback}: the prompt above uses it; change it here`
    : "the prompt above uses this seed";
  setRange("steps", s.steps);
  $("cache-on").checked = s.cache.enabled;
  setRange("tau", s.cache.tau);
  if (!typing($("method"))) $("method").value = s.interpolation.method;
  setRange("factor", s.interpolation.factor);
  showSlow();
}

function showPromptNote() {
  const base = "Enter sets the prompt, Shift+Enter starts a new line, Esc takes back what you typed.";
  $("promptnote").textContent = dirty && settings ? `Not sent yet. The camera uses: "${settings.prompt}". ${base}` : base;
}

async function sendPrompt() {
  const text = $("prompt").value;
  if (!text.trim()) { say("type a prompt first"); return; }
  if (await change("PUT", "/prompt", {prompt: text}, "prompt set")) { dirty = false; showPromptNote(); }
}

$("prompt").addEventListener("input", () => { dirty = true; showPromptNote(); });
$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); sendPrompt(); }
  if (ev.key === "Escape" && settings) { dirty = false; $("prompt").value = settings.prompt; showPromptNote(); }
});
$("send").onclick = sendPrompt;

function readSeed() {
  const v = Number($("seed").value);
  return Number.isInteger(v) ? v : null;
}
$("seed").addEventListener("change", () => {
  const v = readSeed();
  if (v === null) { say("the seed is a whole number"); return; }
  change("PATCH", "/settings", {seed: v}, `seed ${v}`);
});
$("dice").onclick = () => {
  const max = Number($("seed").max) || 4294967295;
  change("PATCH", "/settings", {seed: Math.floor(Math.random() * (max + 1))}, "new seed");
};

for (const b of document.querySelectorAll("button[data-mode]")) {
  b.onclick = () => change("PUT", "/mode", {mode: b.dataset.mode}, "mode " + b.dataset.mode);
}

// sliders apply when let go; their value shows while they move
for (const [id, patch] of [["steps", (v) => ({steps: v})], ["tau", (v) => ({cache: {tau: v}})],
                           ["factor", (v) => ({interpolation: {factor: v}})]]) {
  $(id).addEventListener("input", () => { $(id + "-v").textContent = $(id).value; });
  $(id).addEventListener("change", () => change("PATCH", "/settings", patch(Number($(id).value)), `${id} ${$(id).value}`));
}
$("cache-on").onchange = () => change("PATCH", "/settings", {cache: {enabled: $("cache-on").checked}});
$("method").onchange = () => change("PATCH", "/settings", {interpolation: {method: $("method").value}},
                                    "interpolation " + $("method").value);

// the bounds come from the API's own schema, so the page never disagrees with what the daemon accepts
async function loadBounds() {
  const r = await fetch("/openapi.json");
  const s = (await r.json()).components.schemas;
  const bound = (el, prop) => { el.min = prop.minimum; el.max = prop.maximum; };
  bound($("seed"), s.SettingsPatch.properties.seed);
  bound($("steps"), s.SettingsPatch.properties.steps);
  bound($("factor"), s.InterpolationPatch.properties.factor);
  bound($("tau"), s.CachePatch.properties.tau);
  $("tau").max = Math.min(TAU_SLIDER_MAX, s.CachePatch.properties.tau.maximum);
  $("method").replaceChildren(...s.InterpolationPatch.properties.method.enum.map((m) => new Option(m, m)));
}

// ---- presets ----------------------------------------------------------------------------------------
function presetRef(p) {  // by name, unless the name would read as a number or a step
  return /^\d+$/.test(p.name) || ["next", "prev", "previous"].includes(p.name) ? p.index : p.name;
}

async function applyPreset(p) {
  if (await change("POST", "/presets/apply", {preset: presetRef(p)}, `preset "${p.name}"`)) {
    dirty = false;  // a preset replaces the prompt: the box shows it, not what was typed before
    showSettings(settings);
  }
}

async function loadPresets() {
  const data = await api("GET", "/presets");
  presets = data.presets;
  $("presets").replaceChildren(...presets.map((p, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.name = p.name;
    b.title = p.prompt + (p.seed !== null ? ` (seed ${p.seed})` : "") + (p.steps !== null ? ` (${p.steps} steps)` : "");
    if (i < 9) { const k = document.createElement("kbd"); k.textContent = String(i + 1); b.append(k); }
    b.append(p.name);
    b.classList.toggle("on", !!settings && settings.preset === p.name);
    b.onclick = () => applyPreset(p);
    return b;
  }));
}

document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
  if (t instanceof HTMLElement && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
  if (/^[1-9]$/.test(ev.key) && presets[Number(ev.key) - 1]) {
    ev.preventDefault();
    applyPreset(presets[Number(ev.key) - 1]);  // key 1 is the first preset, as the buttons show
  }
});

$("saveopen").onclick = () => { $("saveform").hidden = false; $("presetname").focus(); };
$("savecancel").onclick = () => { $("saveform").hidden = true; };
$("saveform").onsubmit = async (ev) => {
  ev.preventDefault();
  const name = $("presetname").value.trim();
  const body = {name, prompt: $("prompt").value, apply: true};
  if (settings) { body.seed = settings.seed; body.steps = settings.steps; }
  try {
    try {
      await api("POST", "/presets", body);
    } catch (e) {
      if (!(e.status === 409 && /exists/.test(e.message) && confirm(`Replace the preset "${name}"?`))) throw e;
      await api("POST", "/presets", {...body, replace: true});
    }
    dirty = false;
    await loadPresets();
    $("saveform").hidden = true;
    say(`saved as preset "${name}"`, true);
  } catch (e) {
    if (!(e instanceof NeedToken)) say(e.message);
  }
};

// ---- pictures ---------------------------------------------------------------------------------------
function showOutput() {
  const on = !!(daemon && daemon.stream_url);
  const url = withToken("/stream.mjpg", $("cells").checked ? {overlay: "cells"} : {});
  $("output").hidden = !on;
  $("outputoff").hidden = on;
  if (!on) {
    $("output").removeAttribute("src");
    $("outputoff").textContent = daemon ? "no preview: output.preview is off" : "no output picture yet";
  } else if ($("output").getAttribute("src") !== url) {
    $("output").src = url;
  }
}
$("cells").onchange = showOutput;

// The input view fetches one JPEG at a time (with the token header) rather than holding a second stream
// open: browsers allow 6 connections to a server, and a page in a dock plus a tab would use them up.
async function pollInput() {
  const on = $("showinput").checked && !!(daemon && daemon.input_url) && !!settings && settings.mode !== "paused";
  $("input").hidden = !on || !inputUrl;
  $("inputoff").hidden = on && !!inputUrl;
  $("inputoff").textContent = !$("showinput").checked ? "input view off"
    : settings && settings.mode === "paused" ? "paused" : daemon && !daemon.input_url ? "no input view" : "no input picture yet";
  if (on && !document.hidden) {
    try {
      const r = await fetch("/input.jpg", {headers: token ? {Authorization: "Bearer " + token} : {}, cache: "no-store"});
      if (r.ok) {
        const old = inputUrl;
        inputUrl = URL.createObjectURL(await r.blob());
        $("input").src = inputUrl;
        if (old) URL.revokeObjectURL(old);
        $("input").hidden = false;
        $("inputoff").hidden = true;
      }
    } catch (e) { /* the daemon went away: the status line says so */ }
  }
  setTimeout(pollInput, on ? INPUT_EVERY_MS : 1000);
}

// ---- status -----------------------------------------------------------------------------------------
function num(v, digits) { return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "-"; }

// the figures the charts draw; vcam/control/page.py chart_sample makes the same from the same status
function chartSample(st) {
  const out = st.output || {}, inf = st.inference || {}, val = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  const interval = val(out.interval_mean_ms);
  return {t: st.uptime_s, output_fps: interval && interval > 0 ? 1000 / interval : null,
          engine_fps: val(inf.engine_fps), latency_p50_ms: val(out.latency_p50_ms),
          latency_p95_ms: val(out.latency_p95_ms), active_fraction: val((inf.cache || {}).active_fraction)};
}

function addSample(st) {
  const s = chartSample(st);
  if (typeof s.t !== "number") return;
  const last = samples[samples.length - 1];
  if (last && s.t < last.t) samples = [];  // a new daemon: its clock starts again
  if (!last || s.t > last.t) samples.push(s);
  while (samples.length && samples[0].t < s.t - WINDOW_S) samples.shift();
}

const charts = [
  new LineChart($("chart-fps"), [{key: "output_fps", label: "output", color: "#5ab0ff"},
                                 {key: "engine_fps", label: "engine", color: "#ffb347"}], {title: "frames/s", windowS: WINDOW_S}),
  new LineChart($("chart-latency"), [{key: "latency_p50_ms", label: "p50", color: "#7ddc7d"},
                                     {key: "latency_p95_ms", label: "p95", color: "#e07bd8"}],
                {title: "latency ms", windowS: WINDOW_S, digits: 0}),
  new LineChart($("chart-active"), [{key: "active_fraction", label: "cells", color: "#ff6b6b"}],
                {title: "active fraction", windowS: WINDOW_S, max: 1, digits: 2}),
];
function drawCharts() { for (const c of charts) c.draw(samples); }
window.addEventListener("resize", drawCharts);

function slowNotice(st) {
  const inf = (st && st.inference) || {};
  const fps = inf.engine_fps;
  if (!(typeof fps === "number" && fps > 0 && fps < SLOW_FPS) || !settings || settings.mode !== "live") return null;
  const head = `The engine makes ${fps.toFixed(2)} frames/s. `;
  if (inf.engine === "flux2-tiny") {
    return head + "The tiny CPU demo model is slow, and its random weights make noise rather than an edit. " +
      "On a GPU with the klein weights it runs in real time: on a machine with an NVIDIA GPU run " +
      "<code>fluxrt-cam models download klein-4b</code> and restart the daemon. Here, 1 step and a higher cache " +
      "threshold make it faster; passthrough shows the camera unedited.";
  }
  if (inf.host_copy === "cpu") {
    return head + "The engine runs on the CPU, which is far too slow for live video: run the daemon on a machine " +
      "with an NVIDIA GPU (<code>fluxrt-cam doctor</code> checks CUDA). Meanwhile 1 step and a higher cache threshold help.";
  }
  return head + "Fewer steps, the spatial cache on, <code>engine.vae = \"taef2\"</code> or a smaller engine.width/height " +
    "make it faster.";
}

function showSlow() {
  const slow = slowNotice(daemon);
  $("slow").hidden = !slow;
  if (slow) $("slow").innerHTML = slow;  // (our own fixed text; the only number in it is formatted here)
}

function showStatus(st) {
  daemon = st;
  const inf = st.inference || {}, out = st.output || {}, src = st.source || {}, obs = st.obs || {};
  const cam = (out.sinks || {}).virtual_camera || {};
  const sample = chartSample(st);
  const rows = [
    ["output", `${num(sample.output_fps, 1)} fps (camera at ${num(out.fps_target, 0)})` +
      (out.showing && out.showing !== "frames" ? `, showing ${out.card || out.showing}` : ""),
     out.showing && out.showing !== "frames" ? "warn" : ""],
    ["engine", `${inf.engine || inf.phase || "starting"}: ${num(inf.engine_fps, 2)} fps, edit ${num(inf.edit_ms, 0)} ms` +
      (inf.interpolator ? `, ${inf.interpolator} x${inf.factor}` : ""), inf.engine_error ? "bad" : ""],
    ["latency", `p50 ${num(out.latency_p50_ms, 0)} ms, p95 ${num(out.latency_p95_ms, 0)} ms`, ""],
    ["active cells", typeof sample.active_fraction === "number" ? `${(100 * sample.active_fraction).toFixed(0)}% recomputed`
      : "- (no spatial cache in this engine)", ""],
    ["camera", cam.error ? cam.error : cam.active ? `on (${cam.device || "device"})` : out.alive === false ? "output process restarting" : "off",
     cam.error ? "bad" : ""],
    ["source", `${src.kind || "-"}: ` + (src.error ? src.error : src.paused ? "paused" : src.connected ? "running" : "connecting"),
     src.error ? "bad" : ""],
    ["OBS", !obs.enabled ? "off ([obs] enabled = false)"
      : `${obs.state || "-"}` + (obs.scene ? `, scene "${obs.scene}"` : "") + (obs.last_error ? `: ${obs.last_error}` : ""),
     obs.enabled && !obs.connected ? "warn" : ""],
    ["restarts", `inference ${inf.restarts || 0}, output ${out.restarts || 0}` +
      (inf.last_error ? `; inference: ${inf.last_error}` : "") + (out.last_error ? `; output: ${out.last_error}` : ""),
     (inf.restarts || out.restarts) ? "warn" : ""],
    ["up", `${num(st.uptime_s, 0)} s, ${(st.stream || {}).watchers || 0} watching the stream`, ""],
  ];
  for (const note of [inf.engine_note, inf.engine_error, inf.settings_error, inf.interpolator_note, inf.last_edit_error]) {
    if (note) rows.push(["note", note, "warn"]);
  }
  $("stats").replaceChildren(...rows.flatMap(([k, v, cls]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = v;
    if (cls) dd.className = cls;
    return [dt, dd];
  }));
  if ($("raw").closest("details").open) $("raw").textContent = JSON.stringify(st, null, 1);
  showSlow();
  const names = st.presets;  // added or changed elsewhere (another page, a restart with a new config)
  if (Array.isArray(names) && (names.length !== presets.length || names.some((n, i) => presets[i].name !== n))) {
    loadPresets().catch(() => {});
  }
  showOutput();
  addSample(st);
  drawCharts();
}

// ---- connection -------------------------------------------------------------------------------------
function connect() {
  if (ws) { ws.onclose = null; ws.close(); }
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(proto + location.host + withToken("/ws"));
  ws.onopen = () => conn("connected", true);
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "settings") showSettings(m.settings);
    else if (m.type === "status") showStatus(m.status);
  };
  ws.onclose = () => {
    ws = null;
    conn("disconnected; retrying...", false);
    retry = setTimeout(start, 2000);
  };
}

async function start() {
  clearTimeout(retry);
  try {
    await loadBounds();
    await loadPresets();
    const st = await api("GET", "/status");
    showSettings(st.settings);
    samples = (await api("GET", "/history")).samples;  // the charts survive a reload
    showStatus(st.daemon);
    connect();
    if (!inputLoop) { inputLoop = true; pollInput(); }  // one polling loop for the page's life
  } catch (e) {
    if (e instanceof NeedToken) return;  // the token form restarts
    conn("no daemon; retrying...", false);
    say(e.message);
    retry = setTimeout(start, 3000);
  }
}

start();
