"""Control API: routes, errors (always 4xx with a message), token, WebSocket push, server start rules,
client + CLI against a real server, and schema-driven fuzzing (schemathesis) that must find no 5xx."""
from __future__ import annotations

import json
import time
import stat

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from vcam.tools.cli import app as cli_app
from vcam.config import ControlConfig, load_config
from vcam.control.routes import create_app
from vcam.control.server import ApiStartError, is_loopback, start_api_server
from vcam.control.client import DaemonClient, DaemonUnavailable
from vcam.control.state import ControlState
from vcam.control.token import TokenError, create_token, ensure_token, read_token

TOKEN = "test-token-0123456789abcdef"
LIMIT = 300


def make_state(**overrides) -> ControlState:
    return ControlState(load_config(None, {"control.max_prompt_length": LIMIT, **overrides}))


def fake_status() -> dict:
    # what a daemon may hand over: nested dicts, a NaN before the first frame, a tuple
    return {"output": {"last_frame": {"prompt_version": 1}, "fps": float("nan")}, "stages_ms": (1.5, 2.0),
            "frames": np.int64(7), "mean": np.float32(0.5)}


@pytest.fixture
def state() -> ControlState:
    return make_state()


@pytest.fixture
def http(state) -> TestClient:
    return TestClient(create_app(state, fake_status, None))


# ---- routes ----------------------------------------------------------------------------------------


def test_prompt_roundtrip_bumps_version(http, state):
    v0 = state.settings.prompt_version
    r = http.put("/api/prompt", json={"prompt": "  a charcoal drawing  "})
    assert r.status_code == 200, r.text
    assert r.json()["prompt"] == "a charcoal drawing" and r.json()["prompt_version"] == v0 + 1
    assert http.get("/api/prompt").json() == {"prompt": "a charcoal drawing", "prompt_version": v0 + 1, "preset": None}
    assert state.settings.prompt == "a charcoal drawing"


def test_presets_by_name_index_next_prev(http, state):
    presets = http.get("/api/presets").json()
    names = [p["name"] for p in presets["presets"]]
    # numbered from 1, as people count: the listing's index is what /apply takes
    assert names == ["watercolor", "anime", "cyberpunk", "oil"] and [p["index"] for p in presets["presets"]] == [1, 2, 3, 4]
    assert http.post("/api/presets/apply", json={"preset": "cyberpunk"}).json()["preset"] == "cyberpunk"
    assert http.post("/api/presets/apply", json={"preset": 2}).json()["preset"] == "anime"
    assert http.post("/api/presets/apply", json={"preset": 4}).json()["preset"] == "oil"
    assert http.post("/api/presets/apply", json={"preset": 1}).json()["preset"] == "watercolor"
    assert http.post("/api/presets/apply", json={"preset": 2}).json()["preset"] == "anime"
    assert http.post("/api/presets/next").json()["preset"] == "cyberpunk"
    assert http.post("/api/presets/prev").json()["preset"] == "anime"
    s = http.post("/api/presets/apply", json={"preset": "next"}).json()
    assert s["preset"] == "cyberpunk" and s["prompt"] == state.presets[2].prompt
    assert http.get("/api/presets").json()["current"] == "cyberpunk"


def test_settings_patch_and_mode(http, state):
    v0 = state.settings.prompt_version
    r = http.patch("/api/settings", json={"seed": 7, "steps": 4, "cache": {"tau": 3.5},
                                          "interpolation": {"method": "blend", "factor": 4}})
    assert r.status_code == 200, r.text
    s = r.json()
    assert (s["seed"], s["steps"], s["cache"]["tau"], s["interpolation"]["method"], s["interpolation"]["factor"]) == \
        (7, 4, 3.5, "blend", 4)
    assert s["cache"]["halo"] == state.settings.cache.halo  # untouched fields keep their values
    assert s["prompt_version"] == v0 + 1
    assert http.put("/api/mode", json={"mode": "paused"}).json()["mode"] == "paused"
    assert http.patch("/api/settings", json={"mode": "passthrough"}).json()["mode"] == "passthrough"


@pytest.mark.parametrize("method,path,body,code,words", [
    ("put", "/api/prompt", {"prompt": "x" * (LIMIT + 1)}, 422, "at most 300"),
    ("put", "/api/prompt", {"prompt": "   "}, 422, "prompt: String should match pattern"),
    ("put", "/api/prompt", {"prompt": "\x1e\x1f"}, 422, "prompt: contains control character U+001E at position 1"),
    ("put", "/api/prompt", {"prompt": "ok\x00"}, 422, "prompt: contains control character U+0000 at position 3"),
    ("put", "/api/prompt", {"prompt": "ok", "seed": 3}, 422, "seed: unknown field"),
    ("put", "/api/prompt", {"text": "ok"}, 422, "prompt: Field required"),
    ("put", "/api/prompt", {"prompt": 5}, 422, "valid string"),
    ("post", "/api/presets/apply", {"preset": "nope"}, 404, "no preset named 'nope'; presets: watercolor"),
    ("post", "/api/presets/apply", {"preset": 99}, 404, "preset 99 out of range: there are 4 presets, 1-4"),
    ("post", "/api/presets/apply", {"preset": 5}, 404, "preset 5 out of range: there are 4 presets, 1-4"),
    ("post", "/api/presets/apply", {"preset": 0}, 422, "preset: Input should be greater than or equal to 1"),
    ("patch", "/api/settings", {}, 422, "nothing to change"),
    ("patch", "/api/settings", {"steps": "4"}, 422, "steps"),
    ("patch", "/api/settings", {"cache": {"enabled": 1}}, 422, "cache.enabled"),
    ("patch", "/api/settings", {"steps": 0}, 422, "steps"),
    ("patch", "/api/settings", {"seed": None}, 422, "seed"),
    ("patch", "/api/settings", {"cache": {"tau": -1}}, 422, "cache.tau"),
    ("patch", "/api/settings", {"cache": {"bogus": 1}}, 422, "cache.bogus: unknown field"),
    ("patch", "/api/settings", {"interpolation": {"model_path": "/etc/passwd"}}, 422, "unknown field"),
    ("put", "/api/mode", {"mode": "sleep"}, 422, "mode"),
])
def test_bad_requests_are_4xx_with_a_message(http, state, method, path, body, code, words):
    v0 = state.settings.prompt_version
    r = getattr(http, method)(path, json=body) if method != "patch" else http.request("PATCH", path, json=body)
    assert r.status_code == code, r.text
    assert words in r.json()["detail"], r.json()
    assert state.settings.prompt_version == v0  # nothing changed


def test_invalid_json_and_huge_bodies(http):
    r = http.put("/api/prompt", content=b'{"prompt": "unterminated', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = http.put("/api/prompt", content=b"\xff\xfe garbage", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = http.put("/api/prompt", content=json.dumps({"prompt": "y" * 200_000}), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    # the over-long prompt is not echoed back in the error
    r = http.put("/api/prompt", json={"prompt": "z" * (LIMIT + 50)})
    assert r.status_code == 422 and "z" * 50 not in r.text


def test_chunked_body_over_the_limit_is_413(http):
    def chunks():
        for _ in range(100):
            yield b"x" * 4096  # no Content-Length: the guard counts
    r = http.put("/api/prompt", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    small = (c for c in [b'{"prompt": ', b'"chunked ok"}'])
    assert http.put("/api/prompt", content=small, headers={"content-type": "application/json"}).json()["prompt"] == "chunked ok"


def test_cross_site_and_rebinding_requests_are_refused(state):
    local = TestClient(create_app(state, fake_status, None, local_only=True), base_url="http://127.0.0.1:8766")
    assert local.post("/api/presets/next").status_code == 200
    # the page itself (same origin) works; another site's page does not, not even a body-less form POST
    assert local.post("/api/presets/next", headers={"Origin": "http://127.0.0.1:8766"}).status_code == 200
    r = local.post("/api/presets/next", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert local.post("/api/presets/next", headers={"Origin": "null"}).status_code == 403
    assert local.post("/api/presets/next", headers={"Origin": "http://localhost:3000"}).status_code == 403
    # DNS rebinding: a foreign name that resolves to 127.0.0.1
    r = local.get("/api/settings", headers={"Host": "evil.example:8766"})
    assert r.status_code == 403 and "not this machine" in r.json()["detail"]
    assert local.get("/api/settings", headers={"Host": "localhost:8766"}).status_code == 200
    assert local.get("/api/settings", headers={"Host": "[::1]:8766"}).status_code == 200
    with pytest.raises(WebSocketDisconnect):
        with local.websocket_connect("/ws", headers={"Origin": "https://evil.example"}) as ws:
            ws.receive_json()


def test_status_is_strict_json(http, state):
    r = http.get("/api/status")
    assert r.status_code == 200
    body = json.loads(r.text)  # strict parse: NaN would not be JSON
    assert body["daemon"]["output"]["fps"] is None and body["daemon"]["stages_ms"] == [1.5, 2.0]
    assert body["daemon"]["frames"] == 7 and body["daemon"]["mean"] == 0.5
    assert body["settings"]["prompt_version"] == state.settings.prompt_version


def test_page_and_openapi(http):
    page = http.get("/")
    assert page.status_code == 200 and "FluxRT Camera" in page.text and "/presets/apply" in page.text and "/ws" in page.text
    schema = http.get("/openapi.json").json()
    assert {"/api/prompt", "/api/presets/apply", "/api/settings", "/api/status"} <= set(schema["paths"])
    prompt_schema = schema["components"]["schemas"]["PromptRequest"]
    assert prompt_schema["properties"]["prompt"]["maxLength"] == LIMIT
    assert prompt_schema["additionalProperties"] is False


# ---- token -----------------------------------------------------------------------------------------


def test_token_protects_api_and_ws(state):
    http = TestClient(create_app(state, fake_status, TOKEN))
    r = http.get("/api/settings")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "fluxrt-cam token" in r.json()["detail"]
    assert http.get("/api/settings", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.put("/api/prompt", json={"prompt": "x"}).status_code == 401
    assert http.get("/api/settings", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert http.get(f"/api/settings?token={TOKEN}").status_code == 200
    assert http.get("/openapi.json").status_code == 200 and http.get("/").status_code == 200  # nothing secret
    with pytest.raises(WebSocketDisconnect) as e:
        with http.websocket_connect("/ws") as ws:
            ws.receive_json()
    assert e.value.code == 1008
    with http.websocket_connect(f"/ws?token={TOKEN}") as ws:
        assert ws.receive_json()["type"] == "settings"
    with http.websocket_connect("/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert ws.receive_json()["type"] == "settings"


def test_token_file_is_private(tmp_path):
    path = tmp_path / "cfg" / "fluxrt" / "token"
    token, created = ensure_token(path)
    assert created and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ensure_token(path) == (token, False)  # printed again, not replaced
    rotated = create_token(path, replace=True)
    assert rotated != token and read_token(path) == rotated and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        read_token(path)


def test_cli_token_prints_and_creates(tmp_path):
    path = tmp_path / "token"
    r = CliRunner().invoke(cli_app, ["token", "--set", f"control.token_file={json.dumps(str(path))}"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---- WebSocket -------------------------------------------------------------------------------------


def test_websocket_pushes_settings_and_status(state):
    http = TestClient(create_app(state, fake_status, None, status_interval_s=0.05))
    with http.websocket_connect("/ws") as ws:
        first = ws.receive_json()
        assert first["type"] == "settings" and first["settings"]["prompt_version"] == state.settings.prompt_version
        assert ws.receive_json() == {"type": "status", "status": json.loads(json.dumps(
            {"output": {"last_frame": {"prompt_version": 1}, "fps": None}, "stages_ms": [1.5, 2.0], "frames": 7,
             "mean": 0.5}))}
        state.apply_preset("oil")  # a change from another thread (the OBS bridge, the CLI...)
        for _ in range(50):
            msg = ws.receive_json()
            if msg["type"] == "settings":
                break
        assert msg["settings"]["preset"] == "oil" and msg["settings"]["prompt_version"] == state.settings.prompt_version


# ---- serving ---------------------------------------------------------------------------------------


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.10") and not is_loopback("::")


def test_non_loopback_bind_without_token_refuses(tmp_path, state):
    cfg = ControlConfig(host="0.0.0.0", port=0, token_file=tmp_path / "token")
    with pytest.raises(ApiStartError, match="fluxrt-cam token"):
        start_api_server(cfg, state, fake_status)
    create_token(tmp_path / "token")
    server = start_api_server(cfg, state, fake_status)
    try:
        assert server.token_required
        assert httpx.get(server.url + "/api/settings", trust_env=False).status_code == 401
        assert DaemonClient(server.url, read_token(tmp_path / "token")).settings()["prompt"] == state.settings.prompt
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_server_client_and_cli(tmp_path, state):
    server = start_api_server(ControlConfig(port=0, token_file=tmp_path / "absent"), state, fake_status)
    assert not server.token_required and server.url.startswith("http://127.0.0.1:")
    runner = CliRunner()
    try:
        with DaemonClient(server.url) as c:
            assert c.set_prompt("a linocut print")["prompt"] == "a linocut print"
            assert c.apply_preset("3")["preset"] == "cyberpunk"  # numbered from 1, as the API and the CLI
            assert c.apply_preset(1)["preset"] == "watercolor"
            assert c.apply_preset("3")["preset"] == "cyberpunk"
            assert c.apply_preset("next")["preset"] == "oil"
            assert c.status()["daemon"]["output"]["last_frame"]["prompt_version"] == 1
        args = ["--url", server.url]
        r = runner.invoke(cli_app, ["prompt", "a neon sign", *args])
        assert r.exit_code == 0 and "a neon sign" in r.stdout and state.settings.prompt == "a neon sign"
        r = runner.invoke(cli_app, ["preset", "1", *args])  # the CLI counts from 1, like hotkeys and the page
        assert r.exit_code == 0 and state.settings.preset == "watercolor", r.output
        r = runner.invoke(cli_app, ["preset", "prev", *args, "--json"])
        assert r.exit_code == 0 and json.loads(r.stdout)["preset"] == "oil"
        r = runner.invoke(cli_app, ["preset", "nope", *args])
        assert r.exit_code == 1 and "no preset named 'nope'" in r.stderr
        r = runner.invoke(cli_app, ["preset", "9", *args])
        assert r.exit_code == 1 and "preset 9 out of range: there are 4 presets, 1-4" in r.stderr
        r = runner.invoke(cli_app, ["preset", "0", *args])
        assert r.exit_code == 2 and "preset 0 out of range: presets are numbered from 1" in r.stderr
        r = runner.invoke(cli_app, ["presets", *args])
        assert r.exit_code == 0 and "  1. watercolor" in r.stdout and "* 4. oil" in r.stdout
        assert state.settings.preset == "oil"  # neither refusal changed it
    finally:
        server.stop()
    with pytest.raises(DaemonUnavailable, match="start one with `fluxrt-cam run`"):
        DaemonClient(server.url).settings()
    r = runner.invoke(cli_app, ["prompt", "x", "--url", server.url])
    assert r.exit_code == 1 and f"no daemon at {server.url}; start one with `fluxrt-cam run`" in r.stderr


def test_real_websocket_push_and_quick_stop(state):
    """Over a real socket: a change made elsewhere is pushed; stop() does not wait on open WebSockets."""
    from websockets.sync.client import connect

    server = start_api_server(ControlConfig(port=0), state, fake_status)
    try:
        with connect(server.url.replace("http://", "ws://") + "/ws") as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "settings"
            state.set_prompt("pushed over a socket")
            msgs = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
            assert any(m["type"] == "settings" and m["settings"]["prompt"] == "pushed over a socket" for m in msgs)
            t0 = time.monotonic()
            server.stop()
            assert time.monotonic() - t0 < 3
            with pytest.raises(Exception, match="1012|closed|Closed"):
                while True:
                    ws.recv(timeout=3)
    finally:
        server.stop()


def test_server_port_in_use_is_a_clear_error(state):
    server = start_api_server(ControlConfig(port=0), state, fake_status)
    try:
        with pytest.raises(ApiStartError, match="control.port"):
            start_api_server(ControlConfig(port=server.port), state, fake_status)
    finally:
        server.stop()


# ---- fuzzing ---------------------------------------------------------------------------------------


# schemathesis' lazy `from_fixture` breaks on pytest 9 (Function._nodeid): load the schemas eagerly, each
# over an app with its own state
open_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_state(), fake_status, None))
token_schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(make_state(), fake_status, TOKEN))
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@open_schema.parametrize()
@FUZZ
def test_fuzz_api_never_5xx(case):
    """Every documented operation with generated (valid and invalid) inputs: no 5xx, responses match the schema."""
    response = case.call_and_validate()
    assert response.status_code < 500


@token_schema.parametrize()
@FUZZ
def test_fuzz_api_with_token_never_5xx(case):
    response = case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500


def test_fuzz_then_still_serving(state):
    """After garbage of every kind the app keeps serving and its state stays valid."""
    http = TestClient(create_app(state, fake_status, None), raise_server_exceptions=True)
    junk = [b"", b"null", b"[]", b"{}", b'{"prompt": null}', b'{"prompt": ["a"]}', b'{"prompt": "\\u0000"}',
            b'{"preset": true}', b'{"preset": -1}', b'{"preset": 1.5}', b'{"preset": {}}', b"\x00" * 64,
            json.dumps({"prompt": "\ud800"}).encode(), b'{"cache": {"tau": 1e400}}', b'{"seed": 1e30}']
    for body in junk:
        for method, path in [("PUT", "/api/prompt"), ("POST", "/api/presets/apply"), ("PATCH", "/api/settings"),
                             ("PUT", "/api/mode")]:
            r = http.request(method, path, content=body, headers={"content-type": "application/json"})
            assert 200 <= r.status_code < 500, (method, path, body, r.status_code, r.text)
    assert http.get("/api/settings").status_code == 200
    assert isinstance(state.settings.prompt, str) and state.settings.prompt.strip()


def test_no_secret_in_uvicorn_logs(tmp_path, state, caplog):
    """`?token=` must not reach any log (uvicorn's access log is off)."""
    import logging

    caplog.set_level(logging.DEBUG)
    create_token(tmp_path / "token")
    token = read_token(tmp_path / "token")
    server = start_api_server(ControlConfig(host="0.0.0.0", port=0, token_file=tmp_path / "token"), state, fake_status)
    try:
        assert httpx.get(f"{server.url}/api/settings?token={token}", trust_env=False).status_code == 200
        assert httpx.get(f"{server.url}/api/settings?token=wrong-guess", trust_env=False).status_code == 401
    finally:
        server.stop()
    # everything but the test's own HTTP client (httpx logs the URLs it fetches)
    server_side = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "control API on" in server_side  # the server did log, at INFO
    assert token not in server_side and "wrong-guess" not in server_side


# ---- presets added at run time, chart history, the input picture -------------------------------------


def test_add_preset_validated_like_config_presets(http, state):
    r = http.post("/api/presets", json={"name": "sketch", "prompt": "  a pencil sketch  ", "seed": 9, "steps": 3})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["added"] == body["presets"][-1] and len(body["presets"]) == 5
    assert {k: body["added"][k] for k in ("name", "prompt", "seed", "steps", "style_reference")} == {
        "name": "sketch", "prompt": "a pencil sketch", "seed": 9, "steps": 3, "style_reference": None}
    assert state.settings.preset is None  # added, not applied
    s = http.post("/api/presets/apply", json={"preset": "sketch"}).json()
    assert (s["preset"], s["prompt"], s["seed"], s["steps"]) == ("sketch", "a pencil sketch", 9, 3)
    # a taken name: 409 unless replaced; `apply` applies it in the same request
    r = http.post("/api/presets", json={"name": "sketch", "prompt": "a charcoal sketch"})
    assert r.status_code == 409 and "exists" in r.json()["detail"]
    r = http.post("/api/presets", json={"name": "sketch", "prompt": "a charcoal sketch", "replace": True, "apply": True})
    assert r.status_code == 201 and r.json()["added"] == r.json()["presets"][-1] and len(r.json()["presets"]) == 5
    assert state.settings.prompt == "a charcoal sketch" and state.settings.seed == 0  # no seed: engine.seed
    # names that apply would read as a number or a step
    for name in ("12", "next", "prev"):
        r = http.post("/api/presets", json={"name": name, "prompt": "x"})
        assert r.status_code == 409 and "next/prev" in r.json()["detail"], name
    # the config's rules: control characters, lengths, bounds, types, unknown keys
    for body, words in [({"name": "a\x1bb", "prompt": "x"}, "name: contains control character U+001B"),
                        ({"name": "a\nb", "prompt": "x"}, "name: contains control character U+000A"),
                        ({"name": "x" * 65, "prompt": "x"}, "name"),
                        ({"name": "   ", "prompt": "x"}, "name"),
                        ({"name": "ok", "prompt": "x" * (LIMIT + 1)}, "prompt"),
                        ({"name": "ok", "prompt": "\x00"}, "prompt: contains control character U+0000"),
                        ({"name": "ok", "prompt": "x", "steps": 9}, "steps"),
                        ({"name": "ok", "prompt": "x", "seed": -1}, "seed"),
                        ({"name": "ok", "prompt": "x", "seed": "3"}, "seed"),
                        ({"name": "ok", "prompt": "x", "style_reference": "/etc/passwd"}, "unknown field")]:
        r = http.post("/api/presets", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)
    assert [p.name for p in state.presets] == ["watercolor", "anime", "cyberpunk", "oil", "sketch"]


def test_added_presets_are_capped(http, state):
    from vcam.control.state import MAX_PRESETS

    for i in range(len(state.presets), MAX_PRESETS):
        assert http.post("/api/presets", json={"name": f"look {i}", "prompt": "x"}).status_code == 201
    r = http.post("/api/presets", json={"name": "one more", "prompt": "x"})
    assert r.status_code == 409 and "most" in r.json()["detail"] and len(state.presets) == MAX_PRESETS
    # replacing one is still allowed: the list does not grow
    assert http.post("/api/presets", json={"name": "oil", "prompt": "y", "replace": True}).status_code == 201


def test_history_keeps_the_charts_figures(state):
    uptime = [10.0]

    def status() -> dict:
        return {"uptime_s": uptime[0], "output": {"interval_mean_ms": 40.0, "latency_p50_ms": 12.0,
                                                  "latency_p95_ms": float("nan")},
                "inference": {"engine_fps": 8.0, "cache": {"active_fraction": 0.25}}}

    http = TestClient(create_app(state, status, None))
    assert http.get("/api/history").json() == {"samples": []}  # nobody watched yet
    for t in (10.0, 10.3, 11.0, 12.0):  # asked for more often than once a second: one sample a second
        uptime[0] = t
        http.get("/api/status")
    samples = http.get("/api/history").json()["samples"]
    assert [s["t"] for s in samples] == [10.0, 11.0, 12.0]
    assert samples[0] == {"t": 10.0, "output_fps": 25.0, "engine_fps": 8.0, "latency_p50_ms": 12.0,
                          "latency_p95_ms": None, "active_fraction": 0.25}
    uptime[0] = 1000.0  # older than the charts' 5 minutes: dropped
    http.get("/api/status")
    assert [s["t"] for s in http.get("/api/history").json()["samples"]] == [1000.0]
    # a status without an uptime (this file's fake_status) adds nothing
    assert TestClient(create_app(state, fake_status, None)).get("/api/history").json() == {"samples": []}


def test_input_picture_routes(state):
    import cv2

    from vcam.control.stream import StreamSource
    from vcam.shm import FrameChannel

    out_ch, in_ch = FrameChannel.create("test-out", 64, 48, slots=4), FrameChannel.create("test-in", 64, 48, slots=4)
    stream = StreamSource(out_ch.spec, fps=30, stall_timeout_s=0.5)
    stream.input = StreamSource(in_ch.spec, fps=30, stall_timeout_s=0.5).start()
    try:
        stream.input.publish(np.full((48, 64, 3), 200, np.uint8), None)
        http = TestClient(create_app(state, fake_status, TOKEN, stream=stream))
        assert http.get("/input.jpg").status_code == 401  # guarded like the camera's picture
        r = http.get("/input.jpg", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        picture = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (48, 64, 3) and abs(int(picture.mean()) - 200) <= 3
        assert "/input.jpg" in http.get("/openapi.json").json()["paths"]
        # without an input source (a stream made by hand) there are no input routes
        bare = TestClient(create_app(state, fake_status, None, stream=StreamSource(out_ch.spec, 30, 0.5)))
        assert bare.get("/input.jpg").status_code == 404
    finally:
        stream.input.stop()
        out_ch.close()
        in_ch.close()


def test_a_preset_reference_that_only_looks_like_a_number_is_a_404_not_a_500(http):
    r = http.post("/api/presets/apply", json={"preset": "\u00b2"})  # "²": str.isdigit() is true, int() refuses it
    assert r.status_code == 404 and "no preset named" in r.json()["detail"], r.text
