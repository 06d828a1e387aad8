"""The control API's local web page (GET /): prompt box, preset buttons, mode, live status, preview.

A single static document: everything it shows comes from /api and /ws, so the page holds no secret and
needs no template. With a token in force, open `/?token=<token>` once (it is kept in localStorage and
removed from the address bar) or paste it when the page asks.
"""

PAGE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FluxRT Camera</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px system-ui,sans-serif;margin:0;background:#111;color:#eee}
 main{max-width:880px;margin:auto;padding:16px}
 h1{font-size:20px;margin:0 0 12px}
 textarea{width:100%;box-sizing:border-box;height:70px;background:#222;color:#eee;border:1px solid #444;padding:6px}
 button{background:#2d5;border:0;color:#111;padding:6px 12px;margin:4px 4px 0 0;border-radius:4px;cursor:pointer}
 button.preset{background:#345;color:#eee} button.on{background:#59f;color:#111}
 #msg{color:#f77;min-height:1.2em} #status{white-space:pre-wrap;background:#1a1a1a;padding:8px;font:12px monospace}
 img{max-width:100%;margin-top:8px;border:1px solid #333}
</style></head>
<body><main>
<h1>FluxRT Camera</h1>
<textarea id="prompt" maxlength="100000" placeholder="describe the look"></textarea>
<div><button id="send">Set prompt</button>
 <button class="preset" data-mode="live">live</button><button class="preset" data-mode="passthrough">passthrough</button>
 <button class="preset" data-mode="paused">paused</button></div>
<div id="presets"></div>
<div id="msg"></div>
<img id="preview" alt="" hidden>
<p id="cellsrow" hidden><label><input type="checkbox" id="cells"> show the cells the spatial cache recomputed (red)</label></p>
<div id="status">connecting...</div>
</main>
<script>
const q = new URLSearchParams(location.search);
if (q.get("token")) { localStorage.setItem("fluxrt-token", q.get("token")); history.replaceState(null, "", "/"); }
let token = localStorage.getItem("fluxrt-token") || "";
const $ = (id) => document.getElementById(id);
function say(t) { $("msg").textContent = t || ""; }
async function api(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch("/api" + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  if (r.status === 401) {
    token = prompt("This daemon needs its token (run: fluxrt-cam token)") || "";
    localStorage.setItem("fluxrt-token", token);
    throw new Error("token required");
  }
  const data = await r.json();
  if (!r.ok) throw new Error(data.detail || r.statusText);
  return data;
}
function show(s) {
  if (document.activeElement !== $("prompt")) $("prompt").value = s.prompt;
  for (const b of document.querySelectorAll("#presets button")) b.classList.toggle("on", b.dataset.name === s.preset);
  for (const b of document.querySelectorAll("button[data-mode]")) b.classList.toggle("on", b.dataset.mode === s.mode);
}
function streamUrl() {  // same server; an <img> cannot send headers, so the token goes in the query
  const q = new URLSearchParams();
  if ($("cells").checked) q.set("overlay", "cells");
  if (token) q.set("token", token);
  return "/stream.mjpg" + (q.toString() ? "?" + q : "");
}
function showStatus(st) {
  const on = !!(st && st.stream_url), url = streamUrl();
  $("preview").hidden = $("cellsrow").hidden = !on;
  if (on && $("preview").getAttribute("src") !== url) $("preview").src = url;
  if (!on) $("preview").removeAttribute("src");
  $("status").textContent = JSON.stringify(st, null, 1);
}
async function run(method, path, body) {
  try { show(await api(method, path, body)); say(""); } catch (e) { say(e.message); }
}
$("cells").onchange = () => { $("preview").src = streamUrl(); };
$("send").onclick = () => run("PUT", "/prompt", {prompt: $("prompt").value});
for (const b of document.querySelectorAll("button[data-mode]")) b.onclick = () => run("PUT", "/mode", {mode: b.dataset.mode});
async function init() {
  try {
    const p = await api("GET", "/presets");
    $("presets").replaceChildren(...p.presets.map((x) => {
      const b = document.createElement("button");
      b.className = "preset"; b.dataset.name = x.name; b.title = x.prompt;
      b.textContent = (x.index + 1) + ". " + x.name;
      b.onclick = () => run("POST", "/presets/apply", {preset: x.index});
      return b;
    }));
    const st = await api("GET", "/status"); show(st.settings); showStatus(st.daemon);
  } catch (e) { say(e.message); }
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
                           (token ? "?token=" + encodeURIComponent(token) : ""));
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "settings") show(m.settings); else showStatus(m.status);
  };
  ws.onclose = () => { $("status").textContent = "disconnected; retrying..."; setTimeout(init, 2000); };
}
init();
</script></body></html>
"""
